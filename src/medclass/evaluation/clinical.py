"""The per-class (per-label) table of a classifier on one split, with the numbers clinicians read (sensitivity,
specificity, PPV, NPV), and its intervals (Wilson for the proportions, bootstrap for F1 and AUC); the summary
metrics are in :mod:`medclass.metrics`. Every value comes from scikit-learn; this module only decides which
predictions each number sees."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    multilabel_confusion_matrix,
    roc_auc_score,
)

from medclass.evaluation.bootstrap import percentile_interval, wilson
from medclass.tasks import Task

PER_CLASS_COLUMNS = ("class", "support", "sensitivity", "specificity", "ppv", "npv", "f1", "auc")
INTERVAL_COLUMNS = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def _auc_or_none(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    return float(roc_auc_score(y_true, y_score)) if len(np.unique(y_true)) == 2 else None


def one_vs_rest(y_true: np.ndarray, y_pred: np.ndarray, task: Task, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(truth, decisions) as (N, classes) 0/1 arrays: one-hot for single-label tasks, as they are for multi-label."""
    if task == "multilabel":
        return np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    return np.eye(n, dtype=np.int64)[np.asarray(y_true).reshape(-1)], np.eye(n, dtype=np.int64)[y_pred]


def per_class_table(
    y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray, task: Task, classes: list[str]
) -> list[dict[str, Any]]:
    """One row per class (one-vs-rest) or label: support, sensitivity, specificity, PPV, NPV, F1, AUC.
    A value that is undefined (no positives, nothing predicted) is None, not 0."""
    truth, decided = one_vs_rest(y_true, y_pred, task, len(classes))
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


def _weighted_auc(truth: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one class under each row of ``weights`` (R, N) (how often each image occurs in a resample):
    the Mann-Whitney statistic with ties counted half, for all resamples at once. NaN where a resample has no
    positives or no negatives. (scikit-learn would take one call per resample and class: 8,000 calls for a
    1000-resample, 8-class table; this is one sort per class.)"""
    order = np.argsort(score, kind="stable")
    sorted_score, sorted_truth = score[order], truth[order].astype(np.float64)
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    positives = np.add.reduceat(w * sorted_truth, starts, axis=1)
    negatives = np.add.reduceat(w * (1 - sorted_truth), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    numerator = (positives * (below + 0.5 * negatives)).sum(axis=1)  # multiples of 0.5: exact in any order
    denominator = positives.sum(axis=1) * negatives.sum(axis=1)
    return np.divide(numerator, denominator, out=np.full(len(w), np.nan), where=denominator > 0)


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n): how many times each image is drawn in each bootstrap resample (seeded)."""
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def per_class_intervals(
    y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray, task: Task, n_classes: int,
    resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per class, ``{column: [low, high] or None}`` for each value in INTERVAL_COLUMNS, plus ``undefined``
    (column -> why there is no interval) where one is missing for a value that exists. Sensitivity, specificity,
    PPV and NPV are proportions of counts: Wilson intervals (see medclass.evaluation.bootstrap). F1 and AUC: the
    percentile bootstrap (images resampled with replacement, the same resamples for every class)."""
    truth, decided = one_vs_rest(y_true, y_pred, task, n_classes)
    counts = {
        "tp": (truth * decided).sum(axis=0), "fn": (truth * (1 - decided)).sum(axis=0),
        "fp": ((1 - truth) * decided).sum(axis=0), "tn": ((1 - truth) * (1 - decided)).sum(axis=0),
    }  # fmt: skip
    proportions = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"), "ppv": ("tp", "fp"), "npv": ("tn", "fn")}
    weights = resample_weights(len(truth), resamples, seed)
    tp, fn = weights @ (truth * decided), weights @ (truth * (1 - decided))
    fp = weights @ ((1 - truth) * decided)
    resampled = {
        "f1": np.divide(2 * tp, 2 * tp + fp + fn, out=np.full(tp.shape, np.nan), where=(tp + fn) > 0),
        "auc": np.stack([_weighted_auc(truth[:, k], y_score[:, k], weights) for k in range(n_classes)], axis=1),
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    for k in range(n_classes):
        row: dict[str, Any] = {}
        undefined: dict[str, str] = {}
        for column, (hit, miss) in proportions.items():
            bounds = wilson(int(counts[hit][k]), int(counts[hit][k] + counts[miss][k]), confidence)
            row[column] = list(bounds) if bounds is not None else None
        for column, values in resampled.items():
            bounds, reason = percentile_interval(values[:, k], resamples, confidence)
            row[column] = list(bounds) if bounds is not None else None
            # F1 without positives and AUC without both classes have no value at all, so nothing to explain
            exists = counts["tp"][k] + counts["fn"][k] > 0
            if column == "auc":
                exists = exists and counts["tn"][k] + counts["fp"][k] > 0
            if bounds is None and exists:
                undefined[column] = reason
        if undefined:
            row["undefined"] = undefined
        rows.append(row)
    return rows


def average_precision(y_true: np.ndarray, positive_scores: np.ndarray, positive: int) -> float | None:
    """AP (area under the precision-recall curve) of detecting class ``positive``."""
    truth = (np.asarray(y_true).reshape(-1) == positive).astype(np.int64)
    return float(average_precision_score(truth, positive_scores)) if 0 < truth.sum() < len(truth) else None


def _weighted_average_precision(truth: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step-wise definition, sum over thresholds of recall gained times
    precision) under each row of ``weights`` (R, N), for all resamples at once; NaN without positives."""
    order = np.argsort(-score, kind="stable")
    sorted_score, sorted_truth = score[order], truth[order].astype(np.float64)
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    true_pos = np.cumsum(np.add.reduceat(w * sorted_truth, starts, axis=1), axis=1)
    false_pos = np.cumsum(np.add.reduceat(w * (1 - sorted_truth), starts, axis=1), axis=1)
    positives = true_pos[:, -1:]
    precision = np.divide(true_pos, true_pos + false_pos, out=np.zeros_like(true_pos), where=true_pos + false_pos > 0)
    recall = np.divide(true_pos, positives, out=np.zeros_like(true_pos), where=positives > 0)
    gained = np.diff(recall, axis=1, prepend=0.0)
    # A running sum adds in one fixed order; numpy's pairwise .sum() may not (its SIMD path depends on memory
    # alignment), and the last digit of an interval would then depend on the process.
    ap = np.cumsum(gained * precision, axis=1)[:, -1]
    return np.where(positives[:, 0] > 0, ap, np.nan)


def average_precision_interval(
    y_true: np.ndarray, positive_scores: np.ndarray, positive: int, resamples: int, confidence: float, seed: int
) -> tuple[list[float] | None, str]:
    """(bounds, "") or (None, why there is none) for the AP of detecting class ``positive``."""
    truth = (np.asarray(y_true).reshape(-1) == positive).astype(np.int64)
    values = _weighted_average_precision(
        truth, np.asarray(positive_scores), resample_weights(len(truth), resamples, seed)
    )
    bounds, reason = percentile_interval(values, resamples, confidence)
    return (list(bounds) if bounds is not None else None), reason
