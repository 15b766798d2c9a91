"""The metrics medclass ships, registered in the order metrics.json lists them.

ACC and AUC follow MedMNIST's evaluator (see :mod:`medclass.metrics.medmnist`); the others come from scikit-learn
or torchmetrics, except macro F1 and balanced accuracy, computed from confusion counts because the bootstrap
recomputes them a thousand times per evaluation (and every validation epoch).

scikit-learn, scipy and torch are imported where a metric is computed, not with this module: the config validates
metric names against the registry, and a config error should not wait seconds for them to load."""

from __future__ import annotations

import numpy as np

from medclass.metrics.base import METRICS, Metric, Scores, register_metric
from medclass.metrics.medmnist import medmnist_acc, medmnist_auc
from medclass.tasks import Task, is_single_label

HEADLINE = ("headline",)


@register_metric(
    "acc", "ACC",
    "accuracy as MedMNIST's evaluator computes it (binary: P(class 1) > 0.5; multi-label: mean per label)",
    scopes=HEADLINE,
)  # fmt: skip
def _acc(s: Scores) -> float:
    return medmnist_acc(s.y_true, s.y_score, s.task)


@register_metric(
    "auc", "AUC (MedMNIST)", "ROC AUC as MedMNIST's evaluator computes it (multi-class: mean of one-vs-rest AUCs)",
    scopes=HEADLINE,
)  # fmt: skip
def _auc(s: Scores) -> float:
    return medmnist_auc(s.y_true, s.y_score, s.task)


@register_metric(
    "f1_macro", "F1 macro",
    "F1 averaged over classes (multi-label: over labels, at per-label thresholds chosen on validation)",
    scopes=HEADLINE,
)  # fmt: skip
def _f1_macro(s: Scores) -> float:
    return _f1_balanced(s)[0]


@register_metric(
    "balanced_acc", "balanced ACC", "mean recall over classes (multi-label: mean per-label balanced accuracy)",
    scopes=HEADLINE,
)  # fmt: skip
def _balanced_acc(s: Scores) -> float:
    return _f1_balanced(s)[1]


@register_metric("auc_macro_ovr", "AUC macro OvR", "one-vs-rest ROC AUC, unweighted mean over classes (scikit-learn)")
def _auc_macro_ovr(s: Scores) -> float | None:
    return _ovr_auc(s, "macro")


@register_metric(
    "auc_weighted_ovr", "AUC weighted OvR",
    "one-vs-rest ROC AUC, mean over classes weighted by support (scikit-learn)",
)  # fmt: skip
def _auc_weighted_ovr(s: Scores) -> float | None:
    return _ovr_auc(s, "weighted")


def _top_k(k: int) -> None:
    @register_metric(f"top{k}_acc", f"top-{k} ACC", f"true class among the {k} highest scores")
    def _compute(s: Scores) -> float | None:
        if s.task == "multilabel" or s.n_classes <= k:
            return None
        from sklearn.metrics import top_k_accuracy_score

        return float(top_k_accuracy_score(s.truth, s.y_score, k=k, labels=np.arange(s.n_classes)))


_top_k(3)
_top_k(5)


@register_metric("f1_weighted", "F1 weighted", "F1 averaged over classes weighted by support")
def _f1_weighted(s: Scores) -> float:
    from sklearn.metrics import f1_score

    labels = None if s.task == "multilabel" else np.arange(s.n_classes)
    return float(f1_score(s.truth, s.y_pred, labels=labels, average="weighted", zero_division=0))


@register_metric(
    "kappa", "Cohen's kappa", "Cohen's kappa (quadratic weights for ordinal tasks; multi-label: mean over labels)",
    scopes=("compare",),
)  # fmt: skip
def _kappa(s: Scores) -> float:
    from sklearn.metrics import cohen_kappa_score

    if s.task == "multilabel":
        return _mean([cohen_kappa_score(s.truth[:, i], s.y_pred[:, i]) for i in range(s.truth.shape[1])])
    weights = "quadratic" if s.task == "ordinal" else None
    value = cohen_kappa_score(s.truth, s.y_pred, labels=np.arange(s.n_classes), weights=weights)
    return float(value) if np.isfinite(value) else float("nan")


@register_metric("mcc", "MCC", "Matthews correlation coefficient (multi-label: mean over labels)", scopes=("compare",))
def _mcc(s: Scores) -> float:
    from sklearn.metrics import matthews_corrcoef

    if s.task == "multilabel":
        return _mean([matthews_corrcoef(s.truth[:, i], s.y_pred[:, i]) for i in range(s.truth.shape[1])])
    return float(matthews_corrcoef(s.truth, s.y_pred))


@register_metric(
    "ece", "ECE",
    "expected calibration error of the top-label confidence (multi-label: of every label's probability)",
    higher_is_better=False, scopes=("compare",),
)  # fmt: skip
def _ece(s: Scores) -> float:
    return expected_calibration_error(s.y_true, s.y_score, s.task, s.calibration_bins)


@register_metric(
    "brier", "Brier score",
    "Brier score: mean squared error of P(positive) for binary tasks; else summed over classes and averaged over "
    "images",
    higher_is_better=False,
)  # fmt: skip
def _brier(s: Scores) -> float:
    return brier_score(s.y_true, s.y_score, s.task)


# The loss is logged by the training module, not computed from scores; it is registered so that it can be monitored.
METRICS.add(Metric("loss", "loss", "the training objective on the validation split", None, False,
                   frozenset({"monitor"})))  # fmt: skip


def confidence_and_correct(y_true: np.ndarray, y_score: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (probability, outcome): the top-label confidence and whether it was right, or for multi-label tasks
    every label's probability and whether the label is present."""
    y_score = np.asarray(y_score, dtype=np.float64)
    if is_single_label(task):
        return y_score.max(axis=1), (y_score.argmax(axis=1) == np.asarray(y_true).reshape(-1)).astype(np.int64)
    return y_score.reshape(-1), np.asarray(y_true).astype(np.int64).reshape(-1)


def expected_calibration_error(y_true: np.ndarray, y_score: np.ndarray, task: Task, bins: int = 15) -> float:
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

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


def _ovr_auc(s: Scores, average: str) -> float | None:
    """scikit-learn's one-vs-rest AUC of a multi-class task, when every class is present (else undefined)."""
    if not is_single_label(s.task) or s.task == "binary" or len(np.unique(s.truth)) != s.n_classes:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(s.truth, s.y_score, multi_class="ovr", average=average))


def _f1_balanced(s: Scores) -> tuple[float, float]:
    # Macro F1 and balanced accuracy from the confusion counts. They equal scikit-learn's
    # f1_score(average="macro", labels=all classes, zero_division=0) and balanced_accuracy_score (the tests check
    # this), but skip scikit-learn's per-call input validation, which dominates in the bootstrap.
    if s.task == "multilabel":
        return _multilabel_f1_balanced(s.truth, s.y_pred)
    n = s.n_classes
    counts = np.bincount(s.truth * n + s.y_pred, minlength=n * n).reshape(n, n)
    hits = np.diag(counts).astype(np.float64)
    support, predicted = counts.sum(axis=1), counts.sum(axis=0)
    f1 = np.divide(2 * hits, support + predicted, out=np.zeros(n), where=support + predicted > 0)
    present = support > 0
    balanced = float(np.mean(hits[present] / support[present])) if present.any() else float("nan")
    return float(f1.mean()), balanced


def _multilabel_f1_balanced(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    tp = (y_true & y_pred).sum(axis=0).astype(np.float64)
    positives, negatives = y_true.sum(axis=0), (1 - y_true).sum(axis=0)
    fp = y_pred.sum(axis=0) - tp
    tn = negatives - fp
    denominator = positives + tp + fp  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    tpr = np.divide(tp, positives, out=np.full(len(tp), np.nan), where=positives > 0)
    tnr = np.divide(tn, negatives, out=np.full(len(tp), np.nan), where=negatives > 0)
    balanced = np.nanmean(np.stack([tpr, tnr]), axis=0)  # a label with one class present: that class's recall
    return float(f1.mean()), float(np.mean(balanced))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
