"""The headline metrics of a classifier from its scores: MedMNIST ACC/AUC plus macro F1 and balanced accuracy."""

from __future__ import annotations

import numpy as np

from medclass.evaluation.medmnist_metrics import medmnist_acc, medmnist_auc
from medclass.tasks import Task

HEADLINE_METRICS = ("acc", "auc", "f1_macro", "balanced_acc")


def predicted_labels(y_score: np.ndarray, task: Task, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Hard predictions, decided as MedMNIST's ACC decides them (threshold for binary/multi-label, else argmax)."""
    y_score = np.asarray(y_score)
    if task == "multilabel":
        return (y_score > threshold).astype(np.int64)
    if task == "binary":
        return (y_score[:, -1] > threshold).astype(np.int64)
    return np.argmax(y_score, axis=1)


def classification_metrics(
    y_true: np.ndarray, y_score: np.ndarray, task: Task, thresholds: np.ndarray | None = None
) -> dict[str, float]:
    """ACC and AUC (MedMNIST definitions), macro F1 and balanced accuracy (mean over labels for multi-label).

    For multi-label tasks, ``thresholds`` (one per label, chosen on validation) decide F1 and balanced accuracy;
    ACC keeps MedMNIST's 0.5 so it stays comparable with the papers."""
    y_true = np.asarray(y_true)
    y_pred = predicted_labels(y_score, task, 0.5 if thresholds is None else thresholds)
    if task == "multilabel":
        f1, balanced = _multilabel_f1_balanced(y_true.astype(np.int64), y_pred)
    else:
        y_true = y_true.reshape(-1).astype(np.int64)  # labels may arrive as floats (gathered metric states)
        f1, balanced = _f1_balanced(y_true, y_pred, np.asarray(y_score).shape[1])
    return {
        "acc": medmnist_acc(y_true, y_score, task),
        "auc": medmnist_auc(y_true, y_score, task),
        "f1_macro": f1,
        "balanced_acc": balanced,
    }


# Macro F1 and balanced accuracy from the confusion counts. They equal scikit-learn's
# f1_score(average="macro", labels=all classes, zero_division=0) and balanced_accuracy_score (the tests check
# this), but skip scikit-learn's per-call input validation, which dominates when the bootstrap recomputes them
# a thousand times per evaluation (and per validation epoch).
def _f1_balanced(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[float, float]:
    counts = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    hits = np.diag(counts).astype(np.float64)
    support, predicted = counts.sum(axis=1), counts.sum(axis=0)
    f1 = np.divide(2 * hits, support + predicted, out=np.zeros(n_classes), where=support + predicted > 0)
    present = support > 0
    balanced = float(np.mean(hits[present] / support[present])) if present.any() else float("nan")
    return float(f1.mean()), balanced


def _multilabel_f1_balanced(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    tp = (y_true & y_pred).sum(axis=0).astype(np.float64)
    positives, negatives = y_true.sum(axis=0), (1 - y_true).sum(axis=0)
    fp = y_pred.sum(axis=0) - tp
    tn = negatives - fp
    denominator = positives + tp + fp  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    tpr = np.divide(tp, positives, out=np.full(len(tp), np.nan), where=positives > 0)
    tnr = np.divide(tn, negatives, out=np.full(len(tp), np.nan), where=negatives > 0)
    balanced = np.nanmean(np.stack([tpr, tnr]), axis=0)  # a label with one class present: that class's recall
    return float(f1.mean()), float(np.mean(balanced))
