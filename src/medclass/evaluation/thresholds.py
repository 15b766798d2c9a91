"""Decision thresholds chosen on the validation split (never on test): per label for multi-label tasks, and the
operating point of binary tasks."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from medclass.metrics import decide_positive


def _for_decide(cut: float) -> float:
    """scikit-learn's curves decide ``score >= cut``; medclass decides ``score > threshold`` (decide_positive).
    The largest float below the cut makes the same decisions under that rule (1.0, "nothing positive", stays)."""
    return float(cut) if cut >= 1.0 else float(np.nextafter(cut, -np.inf))


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
        thresholds[label] = _for_decide(cuts[best])
    return thresholds


def operating_threshold(
    y_true: np.ndarray, positive_scores: np.ndarray, rule: str = "youden", target_sensitivity: float = 0.9
) -> float:
    """A binary decision threshold on the positive class's score, chosen on these (validation) labels.

    ``youden``: the threshold maximising sensitivity + specificity - 1. ``sensitivity``: the highest threshold
    whose sensitivity reaches ``target_sensitivity`` (so specificity is as high as that target allows)."""
    y_true = np.asarray(y_true).reshape(-1)
    if y_true.min() == y_true.max():
        return 0.5
    fpr, tpr, cuts = roc_curve(y_true, positive_scores)
    cuts = np.minimum(cuts, 1.0)  # scikit-learn's first cut is +inf (nothing predicted positive)
    if rule == "youden":
        return _for_decide(cuts[int(np.argmax(tpr - fpr))])
    reaching = np.flatnonzero(tpr >= target_sensitivity)
    return _for_decide(cuts[reaching[0]])  # cuts fall as tpr rises, so the first is the highest


def sensitivity_specificity(y_true: np.ndarray, positive_scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of the decisions ``metrics.decide_positive(score, threshold)``."""
    y_true = np.asarray(y_true).reshape(-1).astype(bool)
    predicted = decide_positive(positive_scores, threshold)
    sensitivity = float((predicted & y_true).sum() / max(1, y_true.sum()))
    specificity = float((~predicted & ~y_true).sum() / max(1, (~y_true).sum()))
    return sensitivity, specificity
