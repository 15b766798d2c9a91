"""The headline metrics of a classifier from its scores: MedMNIST ACC/AUC plus macro F1 and balanced accuracy."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score

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
        y_true = y_true.astype(np.int64)
        f1 = f1_score(y_true, y_pred, average="macro", zero_division=0)
        balanced = np.mean([balanced_accuracy_score(y_true[:, i], y_pred[:, i]) for i in range(y_true.shape[1])])
    else:
        y_true = y_true.reshape(-1)
        labels = np.arange(np.asarray(y_score).shape[1])
        f1 = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        balanced = balanced_accuracy_score(y_true, y_pred)
    return {
        "acc": medmnist_acc(y_true, y_score, task),
        "auc": medmnist_auc(y_true, y_score, task),
        "f1_macro": float(f1),
        "balanced_acc": float(balanced),
    }
