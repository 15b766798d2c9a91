"""Evaluate a run directory's checkpoint on a split: every metric with bootstrap intervals, the per-class table,
calibration (with a temperature fitted on validation), the binary operating point, per-image predictions and,
unless switched off, the plots and the HTML/Markdown report.

Anything chosen from data (temperature, thresholds, operating point) is chosen on the validation split and only
then applied to the evaluated split."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.config import EvaluationConfig
from medclass.data import ClassificationDataModule, LabelledImages, load_dataset
from medclass.data.dataset import SPLITS
from medclass.errors import UserError
from medclass.evaluation.bootstrap import bootstrap_intervals
from medclass.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
)
from medclass.evaluation.clinical import METRIC_DEFINITIONS, per_class_table, summary_metrics
from medclass.evaluation.metrics import HEADLINE_METRICS, classification_metrics, predicted_labels
from medclass.evaluation.thresholds import best_f1_thresholds, operating_threshold, sensitivity_specificity
from medclass.io import atomic_write_text
from medclass.run_dir import RunDir
from medclass.tasks import Task, scores_from_logits


@dataclass
class EvaluationResult:
    run_dir: Path
    split: str
    checkpoint: str
    metrics: dict[str, float]
    n_samples: int
    epoch: int | None
    task: str
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    operating_point: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "checkpoint": self.checkpoint,
            "epoch": self.epoch,
            "n_samples": self.n_samples,
            "task": self.task,
            "metrics": self.metrics,
            "intervals": {name: list(bounds) for name, bounds in self.intervals.items()},
            "per_class": self.per_class,
            "calibration": self.calibration,
            "operating_point": self.operating_point,
            "definitions": {name: METRIC_DEFINITIONS[name] for name in self.metrics if name in METRIC_DEFINITIONS},
            **self.extra,
        }


def metrics_filename(split: str, checkpoint: str) -> str:
    """metrics.json holds the canonical result (test split, best checkpoint); other pairs get their own file."""
    return "metrics.json" if (split, checkpoint) == ("test", "best") else f"metrics_{split}_{checkpoint}.json"


def calibration_filename(checkpoint: str) -> str:
    """What prediction applies on request: temperature and thresholds, fitted on validation for one checkpoint."""
    return "calibration.json" if checkpoint == "best" else f"calibration_{checkpoint}.json"


def report_dirname(split: str, checkpoint: str) -> str:
    return "report" if (split, checkpoint) == ("test", "best") else f"report_{split}_{checkpoint}"


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    split: str = "test",
    dataset: LabelledImages | None = None,
    progress: bool = False,
    settings: EvaluationConfig | None = None,
    overrides: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Load the run's checkpoint, score every image of ``split`` and write metrics, predictions and the report.

    ``settings`` replace the run's own evaluation settings; ``overrides`` change single fields of them."""
    from medclass.inference import load_module, predict_logits  # inference builds on training; import lazily

    if split not in SPLITS:
        raise UserError(f"split {split!r} does not exist; choose one of {', '.join(SPLITS)}")
    run = RunDir.open(run_dir)
    run.check_format()
    checkpoint_path = run.existing_checkpoint(checkpoint)
    config = run.load_config()
    settings = settings or config.evaluation
    if overrides:
        settings = EvaluationConfig(**{**settings.model_dump(), **overrides})
    if dataset is None:
        dataset = load_dataset(config.data)
    if split not in dataset.splits:
        raise UserError(f"split {split!r} does not exist; choose one of {', '.join(dataset.splits)}")
    module, info = load_module(config, dataset.task, dataset.classes, checkpoint_path)
    datamodule = ClassificationDataModule(dataset, config.data)
    started = time.perf_counter()
    logits, targets = predict_logits(module, datamodule.split_dataloader(split), config.trainer, progress=progress)
    seconds = time.perf_counter() - started
    if split == "val":
        val_logits, val_targets = logits, targets
    else:
        val_logits, val_targets = predict_logits(module, datamodule.split_dataloader("val"), config.trainer)
    task: Task = dataset.task
    scores = _scores(logits, task)
    val_scores = _scores(val_logits, task)

    thresholds = best_f1_thresholds(val_targets, val_scores) if task == "multilabel" else None
    metrics = summary_metrics(targets, scores, task, thresholds)
    calibration = _calibration(logits, scores, targets, val_logits, val_targets, task, settings)
    metrics["ece"], metrics["brier"] = calibration["ece"], calibration["brier"]
    intervals = {}
    if settings.bootstrap:
        intervals = bootstrap_intervals(
            targets, scores, lambda t, s: classification_metrics(t, s, task, thresholds), list(HEADLINE_METRICS),
            resamples=settings.bootstrap, confidence=settings.confidence, seed=config.seed,
        )  # fmt: skip
    operating_point = None
    if task == "binary":
        operating_point = _operating_point(targets, scores, val_targets, val_scores, settings)
    y_pred = predicted_labels(scores, task, 0.5 if thresholds is None else thresholds)
    result = EvaluationResult(
        run_dir=run.path,
        split=split,
        checkpoint=checkpoint,
        metrics=metrics,
        n_samples=len(targets),
        epoch=(info["epoch"] + 1) if info.get("epoch") is not None else None,
        task=task,
        intervals=intervals,
        per_class=per_class_table(targets, scores, y_pred, task, dataset.classes),
        calibration=calibration,
        operating_point=operating_point,
        extra={
            "dataset": dataset.name,
            "model": config.model.name,
            "classes": dataset.classes,
            "split_source": dataset.source.get("split"),
            "seed": config.seed,
            "images_per_second": round(len(targets) / seconds, 1) if seconds > 0 else None,
            "bootstrap": {
                "resamples": settings.bootstrap,
                "confidence": settings.confidence,
                "seed": config.seed,
                "method": "percentile",
            },  # fmt: skip
            **({"thresholds": [round(float(t), 6) for t in thresholds]} if thresholds is not None else {}),
        },
    )
    run.write_json(metrics_filename(split, checkpoint), result.as_dict())
    run.write_json(calibration_filename(checkpoint), _stored_calibration(result, thresholds))
    result.files["metrics"] = run.file(metrics_filename(split, checkpoint))
    result.files["predictions"] = atomic_write_text(
        run.predictions_path(split), predictions_csv(targets, scores, dataset.classes, task)
    )
    if settings.report:
        from medclass.evaluation.report import write_report

        report_dir = run.file(report_dirname(split, checkpoint))
        scaled = apply_temperature(logits, task, calibration["temperature"])
        result.files.update(
            write_report(report_dir, run, config, dataset, result, targets, scores, scaled, y_pred, settings)
        )
    return result


def _scores(logits: np.ndarray, task: Task) -> np.ndarray:
    return scores_from_logits(torch.from_numpy(logits), task).numpy()


def _calibration(
    logits: np.ndarray, scores: np.ndarray, targets: np.ndarray, val_logits: np.ndarray, val_targets: np.ndarray,
    task: Task, settings: EvaluationConfig,
) -> dict[str, Any]:  # fmt: skip
    temperature, val_nll_before, val_nll_after = fit_temperature(val_logits, val_targets, task)
    scaled = apply_temperature(logits, task, temperature)
    bins = settings.calibration_bins
    return {
        "ece": expected_calibration_error(targets, scores, task, bins),
        "brier": brier_score(targets, scores, task),
        "temperature": temperature,
        "ece_scaled": expected_calibration_error(targets, scaled, task, bins),
        "brier_scaled": brier_score(targets, scaled, task),
        "val_nll": val_nll_before,
        "val_nll_scaled": val_nll_after,
        "bins": bins,
        "fitted_on": "val",
    }


def _operating_point(
    targets: np.ndarray, scores: np.ndarray, val_targets: np.ndarray, val_scores: np.ndarray,
    settings: EvaluationConfig,
) -> dict[str, Any]:  # fmt: skip
    threshold = operating_threshold(
        val_targets, val_scores[:, -1], settings.operating_point, settings.target_sensitivity
    )
    sensitivity, specificity = sensitivity_specificity(targets, scores[:, -1], threshold)
    default_sens, default_spec = sensitivity_specificity(targets, scores[:, -1], np.nextafter(0.5, 1.0))
    return {
        "rule": settings.operating_point,
        **({"target_sensitivity": settings.target_sensitivity} if settings.operating_point == "sensitivity" else {}),
        "threshold": threshold,
        "chosen_on": "val",
        "sensitivity": sensitivity,
        "specificity": specificity,
        "at_0.5": {"sensitivity": default_sens, "specificity": default_spec},
    }


def _stored_calibration(result: EvaluationResult, thresholds: np.ndarray | None) -> dict[str, Any]:
    stored: dict[str, Any] = {
        "checkpoint": result.checkpoint,
        "fitted_on": "val",
        "temperature": result.calibration["temperature"],
    }
    if thresholds is not None:
        stored["label_thresholds"] = [float(t) for t in thresholds]
    if result.operating_point is not None:
        stored["threshold"] = result.operating_point["threshold"]
        stored["threshold_rule"] = result.operating_point["rule"]
    return stored


def predictions_csv(targets: np.ndarray, scores: np.ndarray, classes: list[str], task: Task) -> str:
    """One row per image, in split order: index, true and predicted label(s), and the score of every class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    predictions = predicted_labels(scores, task)
    if task == "multilabel":
        writer.writerow(
            ["index", *(f"true:{c}" for c in classes), *(f"pred:{c}" for c in classes), *(f"p:{c}" for c in classes)]
        )
        for i in range(len(scores)):
            writer.writerow([i, *targets[i].astype(int), *predictions[i], *(f"{p:.6f}" for p in scores[i])])
    else:
        writer.writerow(["index", "true", "predicted", *(f"p:{c}" for c in classes)])
        for i in range(len(scores)):
            writer.writerow(
                [i, classes[int(targets[i])], classes[int(predictions[i])], *(f"{p:.6f}" for p in scores[i])]
            )
    return buffer.getvalue()
