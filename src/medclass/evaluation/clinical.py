"""The full set of metrics of a classifier on one split: summary metrics and a per-class (per-label) table with
the numbers clinicians read (sensitivity, specificity, PPV, NPV). Every value comes from scikit-learn; this module
only decides which predictions each metric sees."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    multilabel_confusion_matrix,
    roc_auc_score,
    top_k_accuracy_score,
)

from medclass.evaluation.metrics import classification_metrics, predicted_labels
from medclass.tasks import Task

# Every metric a run can report, with the definition written next to it in metrics.json.
METRIC_DEFINITIONS: dict[str, str] = {
    "acc": "accuracy as MedMNIST's evaluator computes it (binary: P(class 1) > 0.5; multi-label: mean per label)",
    "balanced_acc": "mean recall over classes (multi-label: mean per-label balanced accuracy)",
    "auc": "ROC AUC as MedMNIST's evaluator computes it (multi-class: mean of one-vs-rest AUCs)",
    "auc_macro_ovr": "one-vs-rest ROC AUC, unweighted mean over classes (scikit-learn)",
    "auc_weighted_ovr": "one-vs-rest ROC AUC, mean over classes weighted by support (scikit-learn)",
    "top3_acc": "true class among the 3 highest scores",
    "top5_acc": "true class among the 5 highest scores",
    "f1_macro": "F1 averaged over classes (multi-label: over labels, at per-label thresholds chosen on validation)",
    "f1_weighted": "F1 averaged over classes weighted by support",
    "kappa": "Cohen's kappa (quadratic weights for ordinal tasks; multi-label: mean over labels)",
    "mcc": "Matthews correlation coefficient (multi-label: mean over labels)",
    "ece": "expected calibration error of the top-label confidence (multi-label: of every label's probability)",
    "brier": "Brier score: mean squared error of P(positive) for binary tasks; else summed over classes and "
    "averaged over images",
}
PER_CLASS_COLUMNS = ("class", "support", "sensitivity", "specificity", "ppv", "npv", "f1", "auc")


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def _auc_or_none(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    return float(roc_auc_score(y_true, y_score)) if len(np.unique(y_true)) == 2 else None


def per_class_table(
    y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray, task: Task, classes: list[str]
) -> list[dict[str, Any]]:
    """One row per class (one-vs-rest) or label: support, sensitivity, specificity, PPV, NPV, F1, AUC.
    A value that is undefined (no positives, nothing predicted) is None, not 0."""
    n = len(classes)
    if task == "multilabel":
        truth, decided = y_true.astype(np.int64), y_pred
    else:
        truth = np.eye(n, dtype=np.int64)[y_true.reshape(-1)]
        decided = np.eye(n, dtype=np.int64)[y_pred]
    matrices = multilabel_confusion_matrix(truth, decided)  # per class: [[tn, fp], [fn, tp]]
    rows = []
    for i, name in enumerate(classes):
        (tn, fp), (fn, tp) = matrices[i]
        sensitivity, ppv = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
        f1 = 2 * sensitivity * ppv / (sensitivity + ppv) if sensitivity and ppv else (0.0 if tp + fn > 0 else None)
        rows.append({
            "class": name, "support": int(tp + fn), "sensitivity": sensitivity,
            "specificity": _ratio(tn, tn + fp), "ppv": ppv, "npv": _ratio(tn, tn + fn), "f1": f1,
            "auc": _auc_or_none(truth[:, i], y_score[:, i]),
        })  # fmt: skip
    return rows


def summary_metrics(
    y_true: np.ndarray, y_score: np.ndarray, task: Task, thresholds: np.ndarray | None = None
) -> dict[str, float]:
    """The headline metrics plus AUC variants, top-k, weighted F1, kappa and MCC (those that apply to the task)."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    metrics = classification_metrics(y_true, y_score, task, thresholds)
    y_pred = predicted_labels(y_score, task, 0.5 if thresholds is None else thresholds)
    if task == "multilabel":
        truth = y_true.astype(np.int64)
        metrics["f1_weighted"] = float(f1_score(truth, y_pred, average="weighted", zero_division=0))
        metrics["kappa"] = _mean([cohen_kappa_score(truth[:, i], y_pred[:, i]) for i in range(truth.shape[1])])
        metrics["mcc"] = _mean([matthews_corrcoef(truth[:, i], y_pred[:, i]) for i in range(truth.shape[1])])
        return metrics
    truth = y_true.reshape(-1)
    n_classes = y_score.shape[1]
    labels = np.arange(n_classes)
    present = np.unique(truth)
    if task != "binary" and len(present) == n_classes:
        metrics["auc_macro_ovr"] = float(roc_auc_score(truth, y_score, multi_class="ovr", average="macro"))
        metrics["auc_weighted_ovr"] = float(roc_auc_score(truth, y_score, multi_class="ovr", average="weighted"))
    for k in (3, 5):
        if n_classes > k:
            metrics[f"top{k}_acc"] = float(top_k_accuracy_score(truth, y_score, k=k, labels=labels))
    metrics["f1_weighted"] = float(f1_score(truth, y_pred, labels=labels, average="weighted", zero_division=0))
    weights = "quadratic" if task == "ordinal" else None
    metrics["kappa"] = _nan_if_undefined(cohen_kappa_score(truth, y_pred, labels=labels, weights=weights))
    metrics["mcc"] = float(matthews_corrcoef(truth, y_pred))
    return metrics


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _nan_if_undefined(value: float) -> float:
    return float(value) if np.isfinite(value) else float("nan")
