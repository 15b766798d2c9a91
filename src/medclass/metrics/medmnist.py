"""ACC and AUC exactly as MedMNIST's own evaluator (``medmnist.evaluator.getACC/getAUC``) defines them, so numbers
are comparable with the MedMNIST papers.

Reimplemented rather than imported for one reason: MedMNIST's functions raise when a class is absent from
``y_true`` (small validation splits, smoke tests). Here such a class is left out of the AUC average; whenever every
class is present the result is identical to MedMNIST's (tests check this against the medmnist package).

- binary: AUC of the last column's score; ACC of ``score[:, -1] > 0.5``.
- multi-class and ordinal: mean of one-vs-rest AUCs over classes; ACC of the argmax.
- multi-label: mean of per-label AUCs; mean of per-label accuracies at threshold 0.5.
"""

from __future__ import annotations

import numpy as np

from medclass.tasks import Task


def column_aucs(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of every column of ``scores`` against the 0/1 column of ``truth``; NaN where a column has only one
    class. Computed from ranks (the Mann-Whitney statistic, ties averaged), which equals scikit-learn's
    ``roc_auc_score`` per column but handles all columns in one vectorised pass: about 20x faster for 8 classes,
    which matters when bootstrapping a thousand resamples."""
    from scipy.stats import rankdata  # here, not at import: see medclass.metrics.builtin

    truth = np.asarray(truth, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64), axis=0)
    positives = truth.sum(axis=0)
    negatives = len(truth) - positives
    rank_sum = np.where(truth, ranks, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def _mean_defined(values: np.ndarray) -> float:
    defined = values[np.isfinite(values)]
    return float(np.mean(defined)) if len(defined) else float("nan")


def medmnist_auc(y_true: np.ndarray, y_score: np.ndarray, task: Task) -> float:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "multilabel":
        return _mean_defined(column_aucs(y_true, y_score))
    y_true = y_true.reshape(-1)
    if task == "binary":
        positive = y_score[:, -1] if y_score.ndim == 2 else y_score
        return float(column_aucs((y_true == 1)[:, None], positive[:, None])[0])
    truth = y_true[:, None] == np.arange(y_score.shape[1])[None, :]
    return _mean_defined(column_aucs(truth, y_score))


def medmnist_acc(y_true: np.ndarray, y_score: np.ndarray, task: Task, threshold: float = 0.5) -> float:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "multilabel":
        y_pred = y_score > threshold
        return float(np.mean([np.mean(y_true[:, i] == y_pred[:, i]) for i in range(y_true.shape[1])]))
    y_true = y_true.reshape(-1)
    if task == "binary":
        positive = y_score[:, -1] if y_score.ndim == 2 else y_score
        return float(np.mean(y_true == (positive > threshold)))
    return float(np.mean(y_true == np.argmax(y_score, axis=-1)))  # scikit-learn's accuracy_score, as MedMNIST
