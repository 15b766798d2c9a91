"""How far to trust the predicted probabilities: expected calibration error, Brier score, reliability curve, and
temperature scaling fitted on the validation split.

Single-label tasks are judged on the top-label confidence (is the model right as often as it is sure?);
multi-label tasks on every label's probability. ECE comes from torchmetrics; the
temperature is the one-parameter fit of Guo et al. (2017), minimising validation NLL with scipy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from medclass.metrics import brier_score, confidence_and_correct, expected_calibration_error
from medclass.tasks import Task, is_single_label, scores_from_logits


@dataclass(frozen=True)
class ReliabilityCurve:
    confidence: np.ndarray  # mean predicted probability per non-empty bin
    accuracy: np.ndarray  # observed frequency per non-empty bin
    counts: np.ndarray  # images (pairs) per non-empty bin


def reliability_curve(y_true: np.ndarray, y_score: np.ndarray, task: Task, bins: int = 15) -> ReliabilityCurve:
    """Mean confidence and observed accuracy per equal-width bin, the binning ECE uses. (scikit-learn's
    calibration_curve does the same but refuses inputs where every prediction was right, a real case for small
    or easy test sets, hence these few lines.)"""
    confidence, correct = confidence_and_correct(y_true, y_score, task)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    filled = counts > 0
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)[filled] / counts[filled]
    accuracy = np.bincount(index, weights=correct, minlength=bins)[filled] / counts[filled]
    return ReliabilityCurve(mean_confidence, accuracy, counts[filled])


def _nll(logits: np.ndarray, y_true: np.ndarray, task: Task, temperature: float) -> float:
    tensor = torch.from_numpy(logits / temperature)
    if is_single_label(task):
        target = torch.from_numpy(np.asarray(y_true).reshape(-1)).long()
        return float(torch.nn.functional.cross_entropy(tensor, target))
    return float(torch.nn.functional.binary_cross_entropy_with_logits(tensor, torch.from_numpy(y_true).double()))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, task: Task) -> tuple[float, float, float]:
    """(temperature, NLL before, NLL after) on these (validation) logits. T > 1 softens over-confident models."""
    logits = np.asarray(logits, dtype=np.float64)
    result = minimize_scalar(
        lambda log_t: _nll(logits, y_true, task, float(np.exp(log_t))), bounds=(-3.0, 3.0), method="bounded"
    )
    temperature = float(np.exp(result.x))
    return temperature, _nll(logits, y_true, task, 1.0), _nll(logits, y_true, task, temperature)


def apply_temperature(logits: np.ndarray, task: Task, temperature: float) -> np.ndarray:
    return scores_from_logits(torch.from_numpy(np.asarray(logits, np.float64) / temperature), task).numpy()


def choose_temperature(
    val_logits: np.ndarray, val_targets: np.ndarray, logits: np.ndarray, targets: np.ndarray, task: Task,
    bins: int = 15, split: str = "test",
) -> dict:  # fmt: skip
    """Fit a temperature on validation and keep it only when it helps there (lower NLL and no higher ECE); the
    evaluated split is never used to decide, only to report what the fitted temperature does to it
    (``worse_on_test``, with a ``warning`` to show). ``temperature`` is what prediction applies when asked."""
    fitted, val_nll_before, val_nll_after = fit_temperature(val_logits, val_targets, task)
    val_ece_before = expected_calibration_error(val_targets, apply_temperature(val_logits, task, 1.0), task, bins)
    val_ece_after = expected_calibration_error(val_targets, apply_temperature(val_logits, task, fitted), task, bins)
    if not val_nll_after < val_nll_before:
        kept, reason = False, "it does not lower the validation NLL"
    elif val_ece_after > val_ece_before:
        kept, reason = False, f"it raises the validation ECE ({val_ece_before:.4f} -> {val_ece_after:.4f})"
    else:
        kept, reason = True, "it lowers the validation NLL and does not raise the validation ECE"
    scores, scaled = apply_temperature(logits, task, 1.0), apply_temperature(logits, task, fitted)
    ece, ece_scaled = (
        expected_calibration_error(targets, scores, task, bins),
        expected_calibration_error(targets, scaled, task, bins),
    )
    warning = None
    if ece_scaled > ece and kept:  # a temperature that is not applied changes nothing: no warning about it
        warning = (
            f"calibration: the temperature {fitted:.3f} fitted on validation raises the {split} ECE from {ece:.4f} to "
            f"{ece_scaled:.4f}; it is kept (validation decides), so prediction with --calibrated is less calibrated "
            "here"
        )
    return {
        "ece": ece,
        "brier": brier_score(targets, scores, task),
        "fitted_temperature": fitted,
        "temperature": fitted if kept else 1.0,
        "applied": kept,
        "reason": reason,
        "ece_scaled": ece_scaled,
        "brier_scaled": brier_score(targets, scaled, task),
        "worse_on_test": bool(ece_scaled > ece and kept),  # what prediction applies is worse on the evaluated split
        "warning": warning,
        "val_nll": val_nll_before,
        "val_nll_scaled": val_nll_after,
        "val_ece": val_ece_before,
        "val_ece_scaled": val_ece_after,
        "bins": bins,
        "fitted_on": "val",
    }
