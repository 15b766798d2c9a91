"""Per-label decision thresholds for multi-label tasks, chosen on the validation split (never on test)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve


def best_f1_thresholds(y_true: np.ndarray, scores: np.ndarray, default: float = 0.5) -> np.ndarray:
    """For each label, the score threshold with the highest F1 on these (validation) labels; ``default`` for a
    label without positives or negatives, where F1 cannot choose."""
    y_true = np.asarray(y_true)
    thresholds = np.full(y_true.shape[1], default, dtype=np.float64)
    for label in range(y_true.shape[1]):
        column = y_true[:, label]
        if column.min() == column.max():
            continue
        precision, recall, cuts = precision_recall_curve(column, scores[:, label])
        f1 = np.divide(
            2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
        )
        best = int(np.argmax(f1[:-1]))  # the last point has no threshold
        thresholds[label] = float(cuts[best])
    return thresholds
