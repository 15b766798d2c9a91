"""Decision thresholds chosen on the validation split (never on test): per label for multi-label tasks, and the
operating point of binary tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from medclass.evaluation.bootstrap import wilson
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


def decision_counts(truth: np.ndarray, decided: np.ndarray) -> dict[str, int]:
    """True/false positives and negatives of boolean decisions against boolean truth."""
    return {"tp": int((truth & decided).sum()), "fp": int((~truth & decided).sum()),
            "fn": int((truth & ~decided).sum()), "tn": int((~truth & ~decided).sum())}  # fmt: skip


def decisions_at(truth: np.ndarray, positive_scores: np.ndarray, threshold: float, confidence: float,
                 prevalence: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Counts (TP, FP, FN, TN) of the decisions at ``threshold``, sensitivity, specificity, PPV and NPV with Wilson
    intervals; with ``prevalence``, PPV and NPV where positives are that common (Bayes' rule, their interval from
    the ends of the sensitivity and specificity intervals, as both rise with them)."""
    counts = decision_counts(np.asarray(truth).reshape(-1).astype(bool), decide_positive(positive_scores, threshold))
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    out: dict[str, Any] = {"threshold": threshold, "counts": counts}
    for key, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp), ("ppv", tp, tp + fp),
                      ("npv", tn, tn + fn)):  # fmt: skip
        out[key] = k / n if n else None
        out[f"{key}_ci"] = list(wilson(k, n, confidence)) if n else None
    if prevalence is not None and out["sensitivity"] is not None and out["specificity"] is not None:

        def ppv_npv(sens: float, spec: float) -> tuple[float | None, float | None]:
            hit, false_alarm = sens * prevalence, (1 - spec) * (1 - prevalence)
            clear, miss = spec * (1 - prevalence), (1 - sens) * prevalence
            return (hit / (hit + false_alarm) if hit + false_alarm else None,
                    clear / (clear + miss) if clear + miss else None)  # fmt: skip

        ppv, npv = ppv_npv(out["sensitivity"], out["specificity"])
        (sens_low, sens_high), (spec_low, spec_high) = out["sensitivity_ci"], out["specificity_ci"]
        low, high = ppv_npv(sens_low, spec_low), ppv_npv(sens_high, spec_high)
        out["at_prevalence"] = {
            "prevalence": prevalence, "ppv": ppv, "npv": npv,
            "ppv_ci": None if None in (low[0], high[0]) else [low[0], high[0]],
            "npv_ci": None if None in (low[1], high[1]) else [low[1], high[1]],
        }  # fmt: skip
    return out
