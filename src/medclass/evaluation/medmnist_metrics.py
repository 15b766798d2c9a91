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
from sklearn.metrics import accuracy_score, roc_auc_score

from medclass.tasks import Task


def _binary_auc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    if len(np.unique(y_true)) < 2:
        return None
    return float(roc_auc_score(y_true, y_score))


def _mean_defined(values: list[float | None]) -> float:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else float("nan")


def medmnist_auc(y_true: np.ndarray, y_score: np.ndarray, task: Task) -> float:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "multilabel":
        return _mean_defined([_binary_auc(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])])
    y_true = y_true.reshape(-1)
    if task == "binary":
        auc = _binary_auc(y_true, y_score[:, -1] if y_score.ndim == 2 else y_score)
        return float("nan") if auc is None else auc
    return _mean_defined([_binary_auc((y_true == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1])])


def medmnist_acc(y_true: np.ndarray, y_score: np.ndarray, task: Task, threshold: float = 0.5) -> float:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if task == "multilabel":
        y_pred = y_score > threshold
        return float(np.mean([accuracy_score(y_true[:, i], y_pred[:, i]) for i in range(y_true.shape[1])]))
    y_true = y_true.reshape(-1)
    if task == "binary":
        positive = y_score[:, -1] if y_score.ndim == 2 else y_score
        return float(accuracy_score(y_true, positive > threshold))
    return float(accuracy_score(y_true, np.argmax(y_score, axis=-1)))
