"""Evaluate a run directory's checkpoint on a split and record the metrics and per-image predictions."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medclass.data import ClassificationDataModule, LabelledImages, load_dataset
from medclass.errors import UserError
from medclass.evaluation.metrics import classification_metrics, predicted_labels
from medclass.evaluation.thresholds import best_f1_thresholds
from medclass.io import atomic_write_text
from medclass.run_dir import RunDir
from medclass.tasks import Task

METRIC_DEFINITIONS = {
    "acc": "accuracy as MedMNIST's evaluator computes it (binary: P(class 1) > 0.5; multi-label: mean per label)",
    "auc": "ROC AUC as MedMNIST's evaluator computes it (multi-class: mean of one-vs-rest AUCs)",
    "f1_macro": "F1 averaged over classes (multi-label: over labels, at per-label thresholds chosen on validation)",
    "balanced_acc": "mean recall over classes (multi-label: mean per-label balanced accuracy at those thresholds)",
}


@dataclass
class EvaluationResult:
    run_dir: Path
    split: str
    checkpoint: str
    metrics: dict[str, float]
    n_samples: int
    epoch: int | None
    task: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "checkpoint": self.checkpoint,
            "epoch": self.epoch,
            "n_samples": self.n_samples,
            "task": self.task,
            "metrics": self.metrics,
            "definitions": METRIC_DEFINITIONS,
            **self.extra,
        }


def metrics_filename(split: str, checkpoint: str) -> str:
    """metrics.json holds the canonical result (test split, best checkpoint); other pairs get their own file."""
    return "metrics.json" if (split, checkpoint) == ("test", "best") else f"metrics_{split}_{checkpoint}.json"


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    split: str = "test",
    dataset: LabelledImages | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Load the run's checkpoint, score every image of ``split`` and write the metrics and predictions."""
    from medclass.inference import load_module, predict_scores  # inference builds on training; import lazily

    run = RunDir.open(run_dir)
    checkpoint_path = run.existing_checkpoint(checkpoint)
    config = run.load_config()
    if dataset is None:
        dataset = load_dataset(config.data)
    if split not in dataset.splits:
        raise UserError(f"split {split!r} does not exist; choose one of {', '.join(dataset.splits)}")
    module, info = load_module(config, dataset.task, dataset.classes, checkpoint_path)
    loader = ClassificationDataModule(dataset, config.data).split_dataloader(split)
    started = time.perf_counter()
    scores, targets = predict_scores(module, loader, config.trainer, progress=progress)
    seconds = time.perf_counter() - started
    thresholds = None
    if dataset.task == "multilabel":  # per-label thresholds, chosen on validation and only applied to other splits
        val_loader = ClassificationDataModule(dataset, config.data).split_dataloader("val")
        val_scores, val_targets = predict_scores(module, val_loader, config.trainer)
        thresholds = best_f1_thresholds(val_targets, val_scores)
    metrics = classification_metrics(targets, scores, dataset.task, thresholds)
    result = EvaluationResult(
        run_dir=run.path,
        split=split,
        checkpoint=checkpoint,
        metrics=metrics,
        n_samples=len(targets),
        epoch=(info["epoch"] + 1) if info.get("epoch") is not None else None,
        task=dataset.task,
        extra={
            "dataset": dataset.name,
            "split_source": dataset.source.get("split"),
            "images_per_second": round(len(targets) / seconds, 1) if seconds > 0 else None,
            **({"thresholds": [round(float(t), 6) for t in thresholds]} if thresholds is not None else {}),
        },
    )
    run.write_json(metrics_filename(split, checkpoint), result.as_dict())
    atomic_write_text(run.predictions_path(split), predictions_csv(targets, scores, dataset.classes, dataset.task))
    return result


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
