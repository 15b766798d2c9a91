"""Extending medclass is one registration each: a new head (GeM pooling), a new metric (Youden's J) and a new data
source (an npz file of arrays) are registered here, as a plugin module would, and used end to end from a config:
trained, evaluated, reported, compared, packaged and predicted. Every name list of the config is its registry."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import BaseModel
from torch import nn

import medclass.config.build
import medclass.config.data
import medclass.config.model
import medclass.config.recipe
import medclass.config.reporting
import medclass.config.schema
from medclass import load_config, run_experiment
from medclass.config.data import LoaderFields
from medclass.config.model import HeadConfig
from medclass.data.dataset import SPLITS, ImageSplit, LabelledImages
from medclass.data.sources import register_source
from medclass.errors import ConfigError
from medclass.evaluation import compare_runs
from medclass.inference.package import package_from_run
from medclass.inference.predictor import load_predictor, predict_files
from medclass.metrics import METRICS, Scores, register_metric
from medclass.models.heads import register_head
from medclass.registry import (
    AUGMENTATIONS,
    CORRUPTIONS,
    DEGRADATIONS,
    HEADS,
    SCHEDULES,
    SOURCE_CONFIGS,
    SOURCES,
    Registry,
)
from medclass.run_dir import RunDir


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al.) of the feature map, then a linear layer."""

    def __init__(self, width: int, num_classes: int, p: float) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.fc = nn.Linear(width, num_classes)

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(maps))


def build_gem(width: int, num_classes: int, config: HeadConfig) -> nn.Module:
    return GeM(width, num_classes, config.options.get("p", 3.0))


def youden_j(scores: Scores) -> float | None:
    """Sensitivity + specificity - 1 of the binary decisions (None for other tasks)."""
    if scores.task != "binary":
        return None
    truth, decided = scores.truth.astype(bool), scores.y_pred.astype(bool)
    return float((decided & truth).sum() / truth.sum() + (~decided & ~truth).sum() / (~truth).sum() - 1)


class NpzData(LoaderFields):
    """Arrays in one npz file (<split>_images, <split>_labels), the first ``limit`` of each split."""

    source: Literal["npz"] = "npz"
    path: Path
    classes: list[str]
    limit: int = 200


def load_npz(config: NpzData) -> LabelledImages:
    splits = {}
    with np.load(config.path) as arrays:
        for split in SPLITS:
            images = arrays[f"{split}_images"][: config.limit]
            images = images[..., None] if images.ndim == 3 else images
            labels = arrays[f"{split}_labels"][: config.limit].reshape(-1).astype(np.int64)
            splits[split] = ImageSplit(np.ascontiguousarray(images), labels)
    return LabelledImages(config.path.stem, "binary", list(config.classes), splits,
                          source={"type": "npz", "file": str(config.path), "split": "the file's split"})  # fmt: skip


@pytest.fixture
def plugins():
    register_head("gem", feature_map=True)(build_gem)
    register_metric("youden_j", "Youden's J", "sensitivity + specificity - 1 at the decision threshold",
                    scopes=("headline",))(youden_j)  # fmt: skip
    register_source("npz", config=NpzData)(load_npz)
    yield
    for registry, name in ((HEADS, "gem"), (METRICS, "youden_j"), (SOURCE_CONFIGS, "npz"), (SOURCES, "npz")):
        registry.unregister(name)


def test_new_head_metric_and_source_work_from_a_config(plugins, medmnist_dir: Path, tmp_path: Path) -> None:
    config = load_config(
        None,
        [f"output_dir={tmp_path / 'runs'}", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
         "trainer.progress_bar=false", "data.batch_size=32", "data.input_size=64", "evaluation.bootstrap=100"],
        experiment="plugin",
        data={"source": "npz", "path": str(medmnist_dir / "breastmnist.npz"), "classes": ["normal", "malignant"]},
        model={"name": "resnet10t", "head": {"type": "gem", "options": {"p": 2.5}}},
        checkpoint={"monitor": "youden_j"},
    )  # fmt: skip
    assert isinstance(config.data, NpzData) and config.checkpoint.resolved_mode == "max"
    result = run_experiment(config)
    run = RunDir(result.run_dir)

    # the head: GeM on the 2x2 feature map, its p trained and kept in the checkpoint
    assert run.read_status()["status"] == "finished" and run.read_status()["monitor"] == "val/youden_j"
    assert (
        "epoch,stage,train_loss,val_loss,val_acc,val_auc,val_f1_macro,val_balanced_acc,val_youden_j"
        in (run.epochs_csv.read_text().splitlines()[0])
    )
    # the metric: computed, defined, interval, in the report and comparable
    stored = run.read_metrics()
    assert -1.0 <= stored["metrics"]["youden_j"] <= 1.0 and "youden_j" in stored["intervals"]
    assert stored["definitions"]["youden_j"].startswith("sensitivity + specificity")
    assert (
        "Youden&#39;s J" in (run.report_dir() / "report.html").read_text()
        or "Youden's J" in (run.report_dir() / "report.html").read_text()
    )
    comparison = compare_runs(tmp_path / "runs", "youden_j", "best", "test", {"report": False, "bootstrap": 0})
    assert [row.metrics["youden_j"] for row in comparison.rows] == [pytest.approx(stored["metrics"]["youden_j"])]
    # the source: its config saved and read back, a package that predicts real images
    assert type(run.load_config().data) is NpzData
    package = package_from_run(run.path)
    predictor = load_predictor(package)
    with np.load(medmnist_dir / "breastmnist.npz") as arrays:
        image = arrays["test_images"][0]
    Image.fromarray(image).save(tmp_path / "case.png")
    (prediction,) = predict_files(predictor, [str(tmp_path / "case.png")]).predictions
    assert prediction.predicted in (["normal"], ["malignant"])


@pytest.mark.unit
def test_an_unregistered_name_is_a_config_error_with_suggestions() -> None:
    with pytest.raises(ConfigError, match=r"model\.head\.type: unknown head 'gem'; known: linear, mlp"):
        load_config(None, ["model.head.type=gem"], experiment="t", data={"flag": "breastmnist"})
    with pytest.raises(ConfigError, match=r"data\.source: unknown source 'npzz'"):
        load_config(None, [], experiment="t", data={"source": "npzz"})
    with pytest.raises(ConfigError, match=r"checkpoint\.monitor: metric 'kappa' cannot be used here; choose one of"):
        load_config(None, ["checkpoint.monitor=kappa"], experiment="t", data={"flag": "breastmnist"})
    with pytest.raises(ConfigError, match=r"scheduler\.name: unknown schedule 'cosin' \(did you mean cosine\?\)"):
        load_config(None, ["scheduler.name=cosin"], experiment="t", data={"flag": "breastmnist"})


REGISTRIES: list[Registry] = [
    SOURCE_CONFIGS, SOURCES, HEADS, AUGMENTATIONS, DEGRADATIONS, CORRUPTIONS, SCHEDULES, METRICS
]  # fmt: skip


def _literal_names(annotation: object) -> set[str]:
    """Every string of every Literal inside a field's annotation."""
    names: set[str] = set()
    if typing.get_origin(annotation) is Literal:
        names |= {a for a in typing.get_args(annotation) if isinstance(a, str)}
    for arg in typing.get_args(annotation):
        names |= _literal_names(arg)
    return names


@pytest.mark.unit
def test_no_config_field_lists_a_registrys_names() -> None:
    """No Literal of the schema lists a registry's names (two or more of them: a lone word such as "none" may be
    another field's value): the registry is the only list."""
    offenders = []
    for module in (medclass.config.schema, medclass.config.data, medclass.config.model, medclass.config.recipe,
                   medclass.config.reporting, medclass.config.build):  # fmt: skip
        for _, model in inspect.getmembers(module, lambda m: isinstance(m, type) and issubclass(m, BaseModel)):
            for field_name, field in model.model_fields.items():
                if field_name == "source":  # each source class names itself
                    continue
                for registry in REGISTRIES:
                    clash = _literal_names(field.annotation) & set(registry)
                    if len(clash) >= 2:
                        offenders.append(f"{model.__name__}.{field_name}: {registry.kind} names {sorted(clash)}")
    assert not offenders, offenders


@pytest.mark.unit
def test_a_sources_config_and_loader_are_registered_together() -> None:
    assert set(SOURCE_CONFIGS) == set(SOURCES) == {"medmnist", "folder", "csv"}
    for name, model in SOURCE_CONFIGS.items():
        assert model.model_fields["source"].default == name


@pytest.mark.unit
@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("model.head.type", lambda: list(HEADS)),
        ("data.augmentation", lambda: list(AUGMENTATIONS)),
        ("scheduler.name", lambda: list(SCHEDULES)),
        ("checkpoint.monitor", lambda: list(METRICS.monitorable())),
    ],
)
def test_a_named_field_accepts_exactly_its_registry(field: str, names) -> None:
    """Every registered name is a valid value, and a name next to them is not."""
    for name in names():
        config = load_config(None, [f"{field}={name}"], experiment="t", data={"flag": "breastmnist"})
        value = config
        for part in field.split("."):
            value = getattr(value, part)
        assert value == name
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [f"{field}={names()[0]}x"], experiment="t", data={"flag": "breastmnist"})


@pytest.mark.unit
def test_degradations_and_corruptions_come_from_their_registries() -> None:
    from medclass.config.build import LowQualityConfig
    from medclass.config.loading import validate_config
    from medclass.data.corruptions import corrupt

    assert LowQualityConfig(count=1).degradations == list(DEGRADATIONS)
    with pytest.raises(ConfigError, match=r"degradations\.0: unknown degradation 'blurr' \(did you mean blur\?\)"):
        validate_config({"count": 1, "degradations": ["blurr"]}, "low_quality", LowQualityConfig)
    images = np.zeros((1, 8, 8, 1), dtype=np.uint8)
    for name in CORRUPTIONS:
        assert corrupt(images, name, 1, seed=0).shape == images.shape
    with pytest.raises(ConfigError, match=r"unknown corruption 'jpg' \(did you mean jpeg\?\)"):
        corrupt(images, "jpg", 1, seed=0)


@pytest.mark.unit
def test_builtin_name_lists_equal_what_their_modules_register() -> None:
    """The names a registry knows without importing its module (so a config check needs no torch) are exactly
    the ones that module registers."""
    for registry in REGISTRIES:
        if registry.builtin_names:
            loaded = set(registry)  # reading the registry imports its module
            assert loaded == set(registry.builtin_names), f"{registry.kind}: update medclass/registry.py"
