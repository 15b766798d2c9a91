"""Evaluate a run directory's checkpoint on a split: every metric with bootstrap intervals, the per-class table,
calibration (with a temperature fitted on validation), the binary operating point, per-image predictions and,
unless switched off, the plots and the HTML/Markdown report.

Anything chosen from data (temperature, thresholds, operating point) is chosen on the validation split and only
then applied to the evaluated split."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.config import EvaluationConfig, validate_config
from medclass.config.data import check_split
from medclass.data import ClassificationDataModule, LabelledImages, load_dataset
from medclass.evaluation.bootstrap import BOOTSTRAP, WILSON, Intervals, headline_intervals
from medclass.evaluation.calibration import apply_temperature, choose_temperature
from medclass.evaluation.clinical import (
    average_precision,
    average_precision_interval,
    per_class_intervals,
    per_class_table,
)
from medclass.evaluation.report import write_report
from medclass.evaluation.result import EvaluationResult
from medclass.evaluation.subgroups import split_subgroups
from medclass.evaluation.thresholds import best_f1_thresholds, decisions_at, operating_threshold
from medclass.metrics import predicted_labels, summary_metrics
from medclass.run_dir import RunDir
from medclass.tasks import Task, positive_class_index, scores_from_logits
from medclass.training.predict import predict_logits
from medclass.training.restore import load_module
from medclass.wording import rule_words


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
    check_split(split)
    run = RunDir.open(run_dir)
    run.check_format()
    checkpoint_path = run.existing_checkpoint(checkpoint)
    config = run.load_config()
    settings = settings or config.evaluation
    if overrides:
        settings = validate_config({**settings.model_dump(), **overrides}, "evaluation", EvaluationConfig)
    if dataset is None:
        dataset = load_dataset(config.data)
    check_split(split, dataset.splits)
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
    positive = positive_class_index(dataset.classes, settings.positive_class) if task == "binary" else None
    metrics = summary_metrics(targets, scores, task, thresholds, settings.calibration_bins)
    calibration = choose_temperature(val_logits, val_targets, logits, targets, task, settings.calibration_bins, split)
    y_pred = predicted_labels(scores, task, 0.5 if thresholds is None else thresholds)
    per_class = per_class_table(targets, scores, y_pred, task, dataset.classes)
    intervals = Intervals()
    if settings.bootstrap:
        intervals = headline_intervals(
            targets, scores, task, thresholds, settings.bootstrap, settings.confidence, config.seed
        )
        class_intervals = per_class_intervals(
            targets, scores, y_pred, task, len(dataset.classes), settings.bootstrap, settings.confidence, config.seed
        )
        for row, row_intervals in zip(per_class, class_intervals, strict=True):
            row["ci"] = row_intervals
    operating_point = found = None
    if positive is not None:
        operating_point = _operating_point(targets, scores, val_targets, val_scores, settings, positive)
        operating_point["positive_class"] = dataset.classes[positive]
        found = positive_summary(targets, scores, per_class, positive, dataset.classes, settings, config.seed)
    subgroups = None
    if settings.subgroups:
        subgroups = split_subgroups(
            settings, config.data, dataset, split, targets, scores, y_pred, thresholds, config.seed
        )
    result = EvaluationResult(
        run_dir=run.path,
        split=split,
        checkpoint=checkpoint,
        metrics=metrics,
        n_samples=len(targets),
        epoch=(info["epoch"] + 1) if info.get("epoch") is not None else None,
        task=task,
        intervals=intervals.bounds,
        undefined_intervals=intervals.undefined,
        interval_methods=intervals.methods,
        per_class=per_class,
        calibration=calibration,
        operating_point=operating_point,
        extra={
            "dataset": dataset.name,
            "model": config.model.name,
            "classes": dataset.classes,
            "split_source": dataset.source.get("split"),
            "seed": config.seed,
            **({"positive_class": found} if found is not None else {}),
            "warnings": [*dataset.warnings, *_warnings(calibration, found)],
            "weak": weakness(targets, metrics, intervals.bounds, task, dataset.classes),
            "images_per_second": round(len(targets) / seconds, 1) if seconds > 0 else None,
            "bootstrap": bootstrap_settings(settings, config.seed),
            **({"thresholds": [round(float(t), 6) for t in thresholds]} if thresholds is not None else {}),
            **({"subgroups": subgroups} if subgroups is not None else {}),
        },
    )
    result.files["metrics"] = run.write_metrics(split, checkpoint, result.as_dict())
    speed = run.read_status().get("images_per_second", {})
    run.update_status(images_per_second={**speed, f"{split}/{checkpoint}": result.extra["images_per_second"]})
    run.write_calibration(checkpoint, _stored_calibration(result, thresholds))
    result.files["predictions"] = run.write_predictions(
        split,
        predictions_csv(
            targets, scores, dataset.classes, task, dataset.sources(split), dataset.split_group_keys(split)
        ),
    )
    if settings.report:
        report_dir = run.report_dir(split, checkpoint)
        scaled = apply_temperature(logits, task, calibration["fitted_temperature"])
        result.files.update(
            write_report(report_dir, run, config, dataset, result, targets, scores, scaled, y_pred, settings)
        )
    return result


def split_scores(
    run_dir: str | Path, split: str = "val", checkpoint: str = "best"
) -> tuple[np.ndarray, np.ndarray, Task]:
    """(targets, class scores, task) of a run's checkpoint on one split, nothing written."""
    run = RunDir.open(run_dir)
    config = run.load_config()
    dataset = load_dataset(config.data)
    check_split(split, dataset.splits)
    module, _ = load_module(config, dataset.task, dataset.classes, run.existing_checkpoint(checkpoint))
    loader = ClassificationDataModule(dataset, config.data).split_dataloader(split)
    logits, targets = predict_logits(module, loader, config.trainer)
    return targets, _scores(logits, dataset.task), dataset.task


def _scores(logits: np.ndarray, task: Task) -> np.ndarray:
    return scores_from_logits(torch.from_numpy(logits), task).numpy()


def _warnings(calibration: dict[str, Any], positive: dict[str, Any] | None) -> list[str]:
    """What a reader must not miss, said in the console, metrics.json and the report."""
    notes = [calibration["warning"]] if calibration.get("warning") else []
    if positive is not None and positive.get("sensitivity") is not None and positive["sensitivity"] < 0.5:
        notes.append(
            f"sensitivity for {positive['class']} is {positive['sensitivity']:.3f} at P > 0.5: the model misses "
            "most positive cases at that threshold (see the operating point)"
        )
    return notes


def weakness(
    targets: np.ndarray, metrics: dict[str, float], intervals: dict[str, tuple[float, float]], task: Task,
    classes: list[str],
) -> list[str]:  # fmt: skip
    """Say so when a model is weak: no more accurate than always answering the commonest class, or an AUC whose
    interval reaches 0.5 (guessing). Shown first in the report and the console, kept in metrics.json."""
    notes = []
    acc = metrics.get("acc")
    if task != "multilabel" and acc is not None and len(targets):
        counts = np.bincount(np.asarray(targets).reshape(-1), minlength=len(classes))
        share = counts.max() / counts.sum()
        if acc <= share + 0.005:
            notes.append(
                f"Weak model: its accuracy ({100 * acc:.1f}%) is no better than always answering "
                f"{classes[int(counts.argmax())]} ({100 * share:.1f}% of the images)."
            )
    auc = intervals.get("auc")
    if auc and auc[0] <= 0.5:
        notes.append(f"Weak model: the AUC's interval ({auc[0]:.3f} - {auc[1]:.3f}) includes 0.5, the AUC of guessing.")
    return notes


def positive_summary(
    targets: np.ndarray, scores: np.ndarray, per_class: list[dict[str, Any]], positive: int, classes: list[str],
    settings: EvaluationConfig, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The binary task's numbers for its positive class (its per-class row, plus average precision)."""
    row = dict(per_class[positive])
    summary: dict[str, Any] = {"class": classes[positive], "index": positive}
    summary.update({k: row[k] for k in ("support", "sensitivity", "specificity", "ppv", "npv", "f1", "auc")})
    summary["ap"] = average_precision(targets, scores[:, positive], positive)
    if "ci" in row:
        ci = dict(row["ci"])
        undefined = dict(ci.pop("undefined", {}))
        ci["ap"], reason = average_precision_interval(
            targets, scores[:, positive], positive, settings.bootstrap, settings.confidence, seed
        )
        if ci["ap"] is None and summary["ap"] is not None:
            undefined["ap"] = reason
        summary["ci"] = {**ci, **({"undefined": undefined} if undefined else {})}
    return summary


def bootstrap_settings(settings: EvaluationConfig, seed: int) -> dict[str, Any]:
    """How the intervals were made, as metrics.json records it."""
    return {
        "resamples": settings.bootstrap,
        "confidence": settings.confidence,
        "seed": seed,
        "method": f"{WILSON} score intervals for proportions (accuracy, sensitivity, specificity, PPV, NPV), "
        f"{BOOTSTRAP} for the rest; undefined (with the reason) where the resamples cannot describe the uncertainty",
    }


def _operating_point(
    targets: np.ndarray, scores: np.ndarray, val_targets: np.ndarray, val_scores: np.ndarray,
    settings: EvaluationConfig, positive: int,
) -> dict[str, Any]:  # fmt: skip
    """The decision threshold on P(positive class), chosen on validation, and what it gives on this split: counts,
    sensitivity, specificity, PPV and NPV with intervals, there and at 0.5."""
    truth, val_truth = _is_positive(targets, positive), _is_positive(val_targets, positive)
    threshold = operating_threshold(
        val_truth, val_scores[:, positive], settings.operating_point, settings.target_sensitivity
    )
    here = decisions_at(truth, scores[:, positive], threshold, settings.confidence, settings.prevalence)
    default = decisions_at(truth, scores[:, positive], 0.5, settings.confidence, settings.prevalence)
    point = {
        "rule": settings.operating_point,
        **({"target_sensitivity": settings.target_sensitivity} if settings.operating_point == "sensitivity" else {}),
        "positive_index": positive,
        "chosen_on": "val",
        "prevalence": float(truth.mean()) if len(truth) else None,
        **here,
        "at_0.5": default,
    }
    point["rule_words"] = rule_words(point)
    return point


def _is_positive(targets: np.ndarray, positive: int) -> np.ndarray:
    return (np.asarray(targets).reshape(-1) == positive).astype(np.int64)


def _stored_calibration(result: EvaluationResult, thresholds: np.ndarray | None) -> dict[str, Any]:
    calibration = result.calibration
    stored: dict[str, Any] = {
        "checkpoint": result.checkpoint,
        "fitted_on": "val",
        "temperature": calibration["temperature"],
        "fitted_temperature": calibration["fitted_temperature"],
        "temperature_applied": calibration["applied"],
        "temperature_reason": calibration["reason"],
    }
    if thresholds is not None:
        stored["label_thresholds"] = [float(t) for t in thresholds]
    if result.operating_point is not None:
        stored["threshold"] = result.operating_point["threshold"]
        stored["threshold_rule"] = result.operating_point["rule"]
        stored["positive_class"] = result.operating_point["positive_class"]
        stored["positive_index"] = result.operating_point["positive_index"]
    return stored


def predictions_csv(
    targets: np.ndarray, scores: np.ndarray, classes: list[str], task: Task, sources: list[str],
    groups: list[str] | None = None,
) -> str:  # fmt: skip
    """One row per image, in split order: index, source (file path, or npz array and index), the keyed hash of its
    group when the data names groups, true and predicted label(s), and the score of every class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    predictions = predicted_labels(scores, task)
    head = ["index", "source", *(["group"] if groups is not None else [])]

    def start(i: int) -> list[Any]:
        return [i, sources[i], *([groups[i]] if groups is not None else [])]

    if task == "multilabel":
        writer.writerow(
            [*head, *(f"true:{c}" for c in classes), *(f"pred:{c}" for c in classes), *(f"p:{c}" for c in classes)]
        )
        for i in range(len(scores)):
            writer.writerow([*start(i), *targets[i].astype(int), *predictions[i], *(f"{p:.6f}" for p in scores[i])])
    else:
        writer.writerow([*head, "true", "predicted", *(f"p:{c}" for c in classes)])
        for i in range(len(scores)):
            writer.writerow(
                [*start(i), classes[int(targets[i])], classes[int(predictions[i])], *(f"{p:.6f}" for p in scores[i])]
            )
    return buffer.getvalue()


def read_predictions(path: Path, classes: list[str], task: Task) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(targets, scores, sources) back from a predictions CSV that :func:`predictions_csv` wrote."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    scores = np.array([[float(row[f"p:{c}"]) for c in classes] for row in rows], dtype=np.float64)
    scores = scores.reshape(-1, len(classes))
    if task == "multilabel":
        targets = np.array([[int(row[f"true:{c}"]) for c in classes] for row in rows]).reshape(-1, len(classes))
    else:
        index = {c: i for i, c in enumerate(classes)}
        targets = np.array([index[row["true"]] for row in rows], dtype=np.int64)
    return targets, scores, [row["source"] for row in rows]
