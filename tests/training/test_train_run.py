"""A short real training run on BreastMNIST and everything it must leave in its run directory."""

from __future__ import annotations

import csv
import json
from importlib import metadata
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from medclass import evaluate_run, load_config, run_experiment
from medclass.config import ExperimentConfig
from medclass.data import ClassificationDataModule, ImageSplit, LabelledImages, load_dataset
from medclass.training import ClassificationModule
from medclass.training.predict import predict_scores
from medclass.training.restore import load_module

REPO = Path(__file__).resolve().parents[2]


def quick_config(tmp: Path, *extra: str) -> ExperimentConfig:
    return load_config(
        REPO / "configs" / "breastmnist.yaml",
        [f"output_dir={tmp}", "trainer.max_epochs=2", "trainer.progress_bar=false", *extra],
    )


@pytest.fixture(scope="module")
def trained(breast_run):
    return breast_run


def test_run_directory_has_everything(trained) -> None:
    run = trained.run_dir
    assert run.parent.name == "breastmnist" and run.parent.parent.is_dir()
    for name in ("run.json", "config.yaml", "data.json", "preprocessing.json", "environment.json", "epochs.csv",
                 "metrics.json", "predictions_test.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):  # fmt: skip
        assert (run / name).is_file(), name
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["format_version"] == 1
    assert status["best_epoch"] == trained.best_epoch and 1 <= trained.best_epoch <= 2
    data = json.loads((run / "data.json").read_text())
    assert data["classes"] == ["malignant", "normal, benign"] and data["task"] == "binary"
    assert data["splits"]["test"]["n"] == 156 and data["source"]["split"] == "official MedMNIST split"
    environment = json.loads((run / "environment.json").read_text())
    assert environment["seed"] == 42
    assert environment["packages"]["torch"] == metadata.version("torch")
    assert "git" in environment and "python" in environment
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["trainer"]["max_epochs"] == 2 and resolved["data"]["flag"] == "breastmnist"


def test_epoch_log_has_one_row_per_epoch(trained) -> None:
    with (trained.run_dir / "epochs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= float(row["val_auc"]) <= 1.0
        assert float(row["train_loss"]) > 0 and float(row["lr_head"]) > 0 and row["stage"] == "train"


def test_test_metrics_are_written_and_sane(trained) -> None:
    metrics = json.loads((trained.run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["checkpoint"] == "best" and metrics["n_samples"] == 156
    assert metrics["metrics"] == pytest.approx(trained.test.metrics)
    for value in metrics["metrics"].values():
        assert 0.0 <= value <= 1.0
    with (trained.run_dir / "predictions_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 156
    assert set(rows[0]) == {"index", "source", "true", "predicted", "p:malignant", "p:normal, benign"}


def test_every_prediction_names_its_image(trained, medmnist_dir: Path) -> None:
    with (trained.run_dir / "predictions_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    npz = np.load(medmnist_dir / "breastmnist.npz")
    classes = ["malignant", "normal, benign"]
    for row in rows[::13]:
        name, index = row["source"].removesuffix("]").split(":test_images[")
        assert name == "breastmnist.npz"
        assert classes[int(npz["test_labels"][int(index)][0])] == row["true"]


def test_binary_results_are_for_the_named_positive_class(trained, medmnist_dir: Path) -> None:
    """BreastMNIST's label 0 is malignant: the clinical numbers must be about detecting it, and say so."""
    from sklearn.metrics import average_precision_score

    saved = json.loads((trained.run_dir / "metrics.json").read_text())
    positive = saved["positive_class"]
    assert positive["class"] == "malignant" and positive["index"] == 0
    malignant = saved["per_class"][0]
    assert malignant["class"] == "malignant"
    assert positive["sensitivity"] == malignant["sensitivity"] and positive["support"] == 42
    with (trained.run_dir / "predictions_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    truth = np.array([row["true"] == "malignant" for row in rows])
    p_malignant = np.array([float(row["p:malignant"]) for row in rows])
    assert positive["ap"] == pytest.approx(average_precision_score(truth, p_malignant))
    assert positive["sensitivity"] == pytest.approx(((p_malignant > 0.5) & truth).sum() / truth.sum())
    op = saved["operating_point"]
    assert op["positive_class"] == "malignant" and op["positive_index"] == 0
    decided = p_malignant >= op["threshold"]
    assert op["sensitivity"] == pytest.approx((decided & truth).sum() / truth.sum())
    assert op["specificity"] == pytest.approx((~decided & ~truth).sum() / (~truth).sum())
    tp, fp = int((decided & truth).sum()), int((decided & ~truth).sum())
    fn, tn = int((~decided & truth).sum()), int((~decided & ~truth).sum())
    assert op["counts"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    if tp + fp:
        assert op["ppv"] == pytest.approx(tp / (tp + fp)) and op["ppv_ci"][0] <= op["ppv"] <= op["ppv_ci"][1]
    assert op["npv"] == pytest.approx(tn / (tn + fn))
    calibration = json.loads((trained.run_dir / "calibration.json").read_text())
    assert calibration["positive_class"] == "malignant" and calibration["positive_index"] == 0
    report = trained.run_dir / "report"
    html = (report / "report.html").read_text()
    assert "Positive class: malignant" in html
    # the operating point is the headline: its threshold, the rule in words, counts and the four proportions
    headline = html[html.index('id="operating-point"') :]
    assert html.index('id="operating-point"') < html.index("<h2>Metrics")
    assert f"P(malignant) &gt; {op['threshold']:.2f}" in headline and "Youden" in headline
    assert f"{tp} of {tp + fn}: " in headline and f"{tn} of {tn + fp}: " in headline
    assert f"finds {tp} of the {tp + fn} images of malignant" in html
    assert (report / "confusion_operating.png").stat().st_size > 5_000
    summary = (report / "summary.md").read_text()
    assert "Threshold P(malignant) > " in summary and f"| sensitivity | images of malignant found | {tp} of" in summary
    for key in ("sensitivity", "specificity", "ppv", "npv", "ap"):
        bounds = positive["ci"][key]
        if positive[key] is None:  # e.g. PPV of a model that never predicts malignant after two epochs
            assert bounds is None
        else:
            assert 0 <= bounds[0] <= positive[key] <= bounds[1] <= 1, key
    if positive["sensitivity"] < 0.5:
        assert any("sensitivity for malignant" in w for w in saved["warnings"])


def test_per_class_rows_have_intervals(trained) -> None:
    rows = json.loads((trained.run_dir / "metrics.json").read_text())["per_class"]
    for row in rows:
        for column in ("sensitivity", "specificity", "ppv", "npv", "f1", "auc"):
            if row[column] is None:
                assert row["ci"][column] is None
                continue
            if row["ci"][column] is None:  # undefined (every resample alike, e.g. a class never predicted): why
                assert "resamples" in row["ci"]["undefined"][column], (row["class"], column)
                continue
            low, high = row["ci"][column]
            assert low <= row[column] <= high and high > low, (row["class"], column)
    html = (trained.run_dir / "report" / "report.html").read_text()
    assert f'{rows[0]["npv"]:.3f}<span class="cell-ci">{rows[0]["ci"]["npv"][0]:.3f}–' in html
    summary = (trained.run_dir / "report" / "summary.md").read_text()
    assert f"{rows[0]['npv']:.3f} ({rows[0]['ci']['npv'][0]:.3f}–" in summary


def test_positive_class_can_be_chosen_and_is_checked(trained) -> None:
    other = evaluate_run(trained.run_dir, overrides={"positive_class": "normal, benign", "report": False})
    assert other.extra["positive_class"]["class"] == "normal, benign"
    assert other.operating_point["positive_index"] == 1
    from medclass.errors import ConfigError

    with pytest.raises(ConfigError, match="'benign' is not a class of this dataset; choose one of 'malignant'"):
        evaluate_run(trained.run_dir, overrides={"positive_class": "benign", "report": False})
    evaluate_run(trained.run_dir)  # leave the run as it was for the other tests


def test_breastmnist_reports_its_official_duplicate(trained) -> None:
    """The official BreastMNIST split has one image in train (malignant) and test (benign): reported, kept."""
    data = json.loads((trained.run_dir / "data.json").read_text())
    checks = data["checks"]
    assert checks["cross_split_groups"] == 1 and checks["label_conflict_groups"] == 1
    assert checks["cross_split"] == [["train:train_images[115]", "test:test_images[76]"]]
    assert any(w.startswith("LEAKAGE: 1 group") for w in data["warnings"])
    assert "LEAKAGE" in (trained.run_dir / "report" / "report.html").read_text()


def test_evaluate_reproduces_the_numbers(trained) -> None:
    again = evaluate_run(trained.run_dir)
    assert again.metrics == trained.test.metrics
    assert again.epoch == trained.best_epoch


def test_checkpoint_reload_gives_identical_predictions(trained) -> None:
    config = load_config(trained.run_dir / "config.yaml")
    dataset = load_dataset(config.data)
    loader = ClassificationDataModule(dataset, config.data).split_dataloader("test")
    first, _ = load_module(config, dataset.task, dataset.classes, trained.run_dir / "checkpoints/best.ckpt")
    second, info = load_module(config, dataset.task, dataset.classes, trained.run_dir / "checkpoints/best.ckpt")
    scores_a, targets = predict_scores(first, loader, config.trainer)
    scores_b, _ = predict_scores(second, loader, config.trainer)
    assert np.array_equal(scores_a, scores_b)
    with (trained.run_dir / "predictions_test.csv").open() as handle:
        saved = np.array([[float(r["p:malignant"]), float(r["p:normal, benign"])] for r in csv.DictReader(handle)])
    assert np.allclose(saved, scores_a, atol=1e-6)
    assert info["classes"] == dataset.classes and info["task"] == "binary"


def test_checkpoints_load_with_weights_only(trained) -> None:
    for name in ("best", "last"):
        checkpoint = torch.load(trained.run_dir / f"checkpoints/{name}.ckpt", weights_only=True, map_location="cpu")
        assert checkpoint["medclass"]["classes"] == ["malignant", "normal, benign"]
    assert torch.load(trained.run_dir / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 1


def test_same_seed_same_weights(tmp_path: Path) -> None:
    def weights(sub: str) -> dict[str, torch.Tensor]:
        result = run_experiment(quick_config(tmp_path / sub, "trainer.max_epochs=1", "trainer.limit_train_batches=3"))
        return torch.load(result.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]

    a, b = weights("a"), weights("b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_multilabel_trains_with_bce(tmp_path: Path) -> None:
    """A multi-label task (ChestMNIST-style label vectors) trains and validates; labels derived from real images."""
    breast = load_dataset(load_config(None, experiment="t", data={"flag": "breastmnist"}).data)
    splits = {}
    for name, split in breast.splits.items():
        label = split.labels.astype(np.float32)
        bright = (split.images.mean(axis=(1, 2, 3)) > 100).astype(np.float32)
        splits[name] = ImageSplit(split.images, np.stack([label, bright], axis=1))
    dataset = LabelledImages("two-labels", "multilabel", ["benign", "bright"], splits)
    config = load_config(None, ["trainer.max_epochs=1"], experiment="t", data={"flag": "breastmnist", "batch_size": 64})
    module = ClassificationModule.from_config(config, "multilabel", dataset.classes)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=ClassificationDataModule(dataset, config.data))
    assert set(trainer.callback_metrics) >= {"val/auc", "val/acc", "val/f1_macro", "train/loss"}
    scores, targets = predict_scores(
        module, ClassificationDataModule(dataset, config.data).split_dataloader("test"), config.trainer
    )
    assert scores.shape == targets.shape == (156, 2)
    assert ((scores >= 0) & (scores <= 1)).all() and not np.allclose(scores.sum(1), 1.0)


def test_evaluate_does_not_depend_on_medclass_data(
    trained, monkeypatch: pytest.MonkeyPatch, medmnist_dir: Path
) -> None:
    resolved = yaml.safe_load((trained.run_dir / "config.yaml").read_text())
    assert Path(resolved["data"]["root"]) == medmnist_dir
    monkeypatch.delenv("MEDCLASS_DATA")
    assert evaluate_run(trained.run_dir).metrics == trained.test.metrics
