"""Recipes: staged schedules, frozen backbones, resuming, early stopping, class balance, ordinal and mixed targets,
EMA, layer decay."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from medclass import load_config, run_experiment
from medclass.config import ExperimentConfig
from medclass.data import ClassificationDataModule, load_dataset
from medclass.data.sampling import EpochSampler, balanced_weights
from medclass.errors import ConfigError
from medclass.models import create_model
from medclass.training.fit import build_module
from medclass.training.losses import ClassificationLoss, balanced_class_weights, sord_targets
from medclass.training.schedule import StagedLR, build_optimizer, parameter_groups

TWO_STAGE = [
    "stages=[{name: head, epochs: 1, train: head, lr: 0.01, scheduler: constant, warmup_epochs: 0},"
    " {name: finetune, epochs: 2, lr: 0.001, backbone_lr: 0.0001, scheduler: cosine, warmup_epochs: 0, min_lr: 0}]",
    "trainer.max_epochs=null",
]


def breast(tmp_path: Path, *overrides: str) -> ExperimentConfig:
    return load_config(
        None,
        [f"output_dir={tmp_path}", "trainer.progress_bar=false", "data.batch_size=64", "model.name=resnet18",
         "trainer.max_epochs=2", *overrides],
        experiment="recipe", data={"source": "medmnist", "flag": "breastmnist"},
    )  # fmt: skip


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "epochs.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_staged_schedule_per_group() -> None:
    config = load_config(None, TWO_STAGE, experiment="t", data={"flag": "breastmnist"})
    model = create_model(config.model, 2)
    optimizer = build_optimizer(model, config.optimizer)
    scheduler = StagedLR(optimizer, config.resolved_stages(), config.scheduler, steps_per_epoch=10)

    def rates() -> dict[str, float]:
        return {g["part"]: g["lr"] for g in optimizer.param_groups}

    seen = [rates()]
    for _ in range(30):
        optimizer.step()
        scheduler.step()
        seen.append(rates())
    assert seen[0] == {"backbone": 0.01, "head": 0.01} and seen[9]["head"] == pytest.approx(0.01)
    assert seen[10] == {"backbone": pytest.approx(1e-4), "head": pytest.approx(1e-3)}
    assert seen[20]["head"] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 10 / 20)))
    assert seen[29]["backbone"] < 1e-5 and seen[20]["head"] / seen[20]["backbone"] == pytest.approx(10)


@pytest.mark.parametrize(("name", "check"), [
    ("step", lambda r: r[0] == pytest.approx(1e-3) and r[25] == pytest.approx(1e-4)),
    ("onecycle", lambda r: r[0] == pytest.approx(4e-5) and max(r) == pytest.approx(1e-3, rel=0.02) and r[-1] < 1e-4),
    ("constant", lambda r: set(r) == {1e-3}),
])  # fmt: skip
def test_schedule_shapes(name: str, check) -> None:
    overrides = [f"scheduler.name={name}", "scheduler.warmup_epochs=0", "scheduler.step_size=2",
                 "trainer.max_epochs=4", "scheduler.min_lr=0"]  # fmt: skip
    config = load_config(None, overrides, experiment="t", data={"flag": "x"})
    model = create_model(config.model, 2)
    optimizer = build_optimizer(model, config.optimizer)
    scheduler = StagedLR(optimizer, config.resolved_stages(), config.scheduler, steps_per_epoch=10)
    history = []
    for _ in range(40):
        history.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert check(history), history


def test_plateau_decays_after_patience() -> None:
    config = load_config(None, ["scheduler.name=plateau", "scheduler.patience=2", "scheduler.gamma=0.5",
                                "scheduler.warmup_epochs=0"], experiment="t", data={"flag": "x"})  # fmt: skip
    optimizer = build_optimizer(create_model(config.model, 2), config.optimizer)
    scheduler = StagedLR(optimizer, config.resolved_stages(), config.scheduler, steps_per_epoch=5)
    for value in (0.7, 0.8, 0.8, 0.79):  # improves, then two validations without improvement
        scheduler.observe(value, "max")
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_layer_decay_scales_backbone_groups() -> None:
    config = load_config(None, ["optimizer.layer_decay=0.5"], experiment="t", data={"flag": "x"})
    groups = parameter_groups(create_model(config.model, 2), config.optimizer)
    scales = {round(g["lr_scale"], 6) for g in groups if g["part"] == "backbone"}
    assert len(scales) > 3 and max(scales) <= 1.0 and min(scales) < 0.1
    assert {g["lr_scale"] for g in groups if g["part"] == "head"} == {1.0}
    hf = load_config(None, ["optimizer.layer_decay=0.5", "model.name=hf:x/y"], experiment="t", data={"flag": "x"})
    assert hf.optimizer.layer_decay == 0.5


class _Snapshots(L.Callback):
    def __init__(self) -> None:
        self.backbone: list[dict[str, torch.Tensor]] = []
        self.head: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.backbone.append({k: v.clone() for k, v in pl_module.net.backbone.state_dict().items()})
        self.head.append({k: v.clone() for k, v in pl_module.net.head.state_dict().items()})


def test_two_stage_freezes_then_fine_tunes(tmp_path: Path) -> None:
    config = breast(tmp_path, *TWO_STAGE, "trainer.limit_train_batches=3")
    dataset = load_dataset(config.data)
    module = build_module(config, dataset)
    initial_backbone = {k: v.clone() for k, v in module.net.backbone.state_dict().items()}
    initial_head = {k: v.clone() for k, v in module.net.head.state_dict().items()}
    snapshots = _Snapshots()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[snapshots])  # fmt: skip
    trainer.fit(module, datamodule=ClassificationDataModule(dataset, config.data, config.seed))
    stage1_backbone, stage1_head = snapshots.backbone[0], snapshots.head[0]
    assert all(torch.equal(initial_backbone[k], stage1_backbone[k]) for k in initial_backbone), "stage 1 froze it"
    assert not all(torch.equal(initial_head[k], stage1_head[k]) for k in initial_head), "the head trained"
    assert not torch.equal(snapshots.backbone[2]["conv1.weight"], stage1_backbone["conv1.weight"]), "stage 2 trains it"


def test_two_stage_run_records_stages_and_rates(tmp_path: Path) -> None:
    result = run_experiment(breast(tmp_path, *TWO_STAGE))
    log = rows(result.run_dir)
    assert [r["stage"] for r in log] == ["head", "finetune", "finetune"]
    assert float(log[0]["lr_head"]) == pytest.approx(0.01)
    assert float(log[1]["lr_head"]) / float(log[1]["lr_backbone"]) == pytest.approx(10)


def test_early_stopping_ends_the_run(tmp_path: Path) -> None:
    result = run_experiment(breast(tmp_path, "trainer.max_epochs=6", "early_stopping.patience=1",
                          "early_stopping.min_delta=10", "checkpoint.monitor=loss"))  # fmt: skip
    status = json.loads((result.run_dir / "run.json").read_text())
    assert status["stopped_early"] is True and status["epochs"] == 2 and len(rows(result.run_dir)) == 2


def test_class_weights_and_balanced_sampler() -> None:
    weights = balanced_class_weights(np.array([300, 100]))
    assert weights.tolist() == pytest.approx([400 / 600, 400 / 200])
    labels = np.array([0] * 90 + [1] * 10)
    draws = np.bincount([i for i, _ in EpochSampler(100, 0, lambda: 0, balanced_weights(labels))], minlength=100)
    assert 30 < draws[90:].sum() < 70, "the rare class must be drawn about half the time"
    config = load_config(None, ["loss.class_weights=balanced"], experiment="t", data={"flag": "x"})
    loss = ClassificationLoss("binary", 2, config.loss, np.array([300, 100]))
    logits, targets = torch.tensor([[2.0, -1.0], [2.0, -1.0]]), torch.tensor([0, 1])  # the rare class is missed
    plain = ClassificationLoss("binary", 2, load_config(None, experiment="t", data={"flag": "x"}).loss)
    assert loss(logits, targets) > plain(logits, targets)


def test_epoch_sampler_depends_only_on_seed_and_epoch() -> None:
    epoch = {"now": 3}
    first = list(EpochSampler(50, 7, lambda: epoch["now"]))
    assert first == list(EpochSampler(50, 7, lambda: 3)) and sorted(i for i, _ in first) == list(range(50))
    epoch["now"] = 4
    assert list(EpochSampler(50, 7, lambda: epoch["now"])) != first


def test_sord_targets_prefer_near_grades() -> None:
    targets = sord_targets(torch.tensor([2]), 5)[0]
    assert targets.argmax() == 2 and targets.sum() == pytest.approx(1.0)
    assert targets[1] == pytest.approx(targets[3]) and targets[1] > targets[0] > 0


def test_ordinal_task_trains_with_soft_ordinal_targets(tmp_path: Path) -> None:
    config = load_config(None, [f"output_dir={tmp_path}", "trainer.max_epochs=1", "trainer.progress_bar=false"],
                         experiment="retina", data={"flag": "retinamnist", "batch_size": 128})  # fmt: skip
    assert config.loss.ordinal == "sord"
    result = run_experiment(config)
    assert result.test.task == "ordinal" and result.test.n_samples == 400


def test_mixup_cutmix_ema_and_bf16(tmp_path: Path, caplog) -> None:
    from medclass.training.hardware import cpu_has_bf16

    # two small batches: bf16 on a CPU without bf16 instructions is emulated (40x slower than 32-bit)
    result = run_experiment(breast(tmp_path, "loss.mixup_alpha=0.2", "loss.cutmix_alpha=1.0", "trainer.ema_decay=0.9",
                                   "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "data.batch_size=16",
                                   "trainer.limit_train_batches=2", "evaluation.bootstrap=0", "evaluation.report=false",
                                   "gate.fit=false"))  # fmt: skip
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "averaging_state" in checkpoint and "current_model_state" in checkpoint
    assert 0.0 <= result.test.metrics["auc"] <= 1.0
    assert json.loads((result.run_dir / "run.json").read_text())["precision"] == "bf16-mixed"
    warned = [r.getMessage() for r in caplog.records if "bf16 is emulated" in r.getMessage()]
    assert bool(warned) == (not torch.cuda.is_available() and not cpu_has_bf16())
    # evaluation on a CPU is 32-bit whatever training used: the test numbers are the exported model's
    from medclass.training.hardware import inference_precision

    assert inference_precision("bf16-mixed", "cpu") == "32-true"


def test_mixup_is_refused_for_multilabel() -> None:
    config = load_config(None, ["loss.mixup_alpha=0.2"], experiment="t", data={"flag": "breastmnist"})
    from medclass.training import ClassificationModule

    with pytest.raises(ConfigError, match="single-label"):
        ClassificationModule.from_config(config, "multilabel", ["a", "b"])


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lr=50", "makes no sense for a learning rate"),
    ("trainer.max_epochs=0", "greater than 0"),
    ("stages=[{epochs: 0}]", "greater than 0"),
    ("stages=[{epochs: 2, early_stopping_patience: 1}, {epochs: 2}]", "only allowed on the last stage"),
])  # fmt: skip
def test_recipe_values_that_make_no_sense(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override, "trainer.max_epochs=null"] if "stages" in override else [override],
                    experiment="t", data={"flag": "x"})  # fmt: skip
