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
from torchmetrics.functional.classification import binary_calibration_error

from medclass.tasks import Task, is_single_label, scores_from_logits


def confidence_and_correct(y_true: np.ndarray, y_score: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (probability, outcome): the top-label confidence and whether it was right, or for multi-label tasks
    every label's probability and whether the label is present."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if is_single_label(task):
        return y_score.max(axis=1), (y_score.argmax(axis=1) == np.asarray(y_true).reshape(-1)).astype(np.int64)
    return y_score.reshape(-1), np.asarray(y_true).astype(np.int64).reshape(-1)


def expected_calibration_error(y_true: np.ndarray, y_score: np.ndarray, task: Task, bins: int = 15) -> float:
    confidence, correct = confidence_and_correct(y_true, y_score, task)
    return float(binary_calibration_error(torch.from_numpy(confidence), torch.from_numpy(correct), n_bins=bins))


def brier_score(y_true: np.ndarray, y_score: np.ndarray, task: Task) -> float:
    """Binary: mean squared error of P(positive) (the usual Brier score). Otherwise: mean over images of the
    squared error summed over classes (labels), against the one-hot truth."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "binary":
        return float(np.mean((y_score[:, -1] - np.asarray(y_true).reshape(-1)) ** 2))
    if is_single_label(task):
        truth = np.eye(y_score.shape[1])[np.asarray(y_true).reshape(-1)]
    else:
        truth = np.asarray(y_true, dtype=np.float64)
    return float(np.mean(np.sum((y_score - truth) ** 2, axis=1)))


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
