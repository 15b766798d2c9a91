"""The metric registry: every metric medclass can report, with what people and the code need to know about it.

A metric is one registered :class:`Metric`: its name (the key in metrics.json, epochs.csv and the CLI), a label for
people, its definition (written next to the value in metrics.json and the report), whether higher is better, its
scopes, and how to compute it from a split's scores. Everything that lists metrics (the monitor choices, the
columns of epochs.csv, the bootstrap intervals, compare, the report, plots, robustness, features and the console)
reads this registry, so registering one metric is all it takes to have it everywhere it belongs:

- ``headline``: computed after every validation epoch (so it can be ``checkpoint.monitor`` and is a column of
  epochs.csv), given a bootstrap interval, ranked in leaderboards and robustness tables.
- ``summary``: computed on the evaluated split and written to metrics.json (every headline metric is one too).
- ``compare``: a column of ``medclass compare``'s table (every headline metric is one too).
- ``monitor``: may be ``checkpoint.monitor`` without being computed from scores (the loss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from medclass.errors import UserError, suggest
from medclass.registry import Registry
from medclass.tasks import Task

SCOPES = ("headline", "summary", "compare", "monitor")


def decide_positive(positive_scores: np.ndarray, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """The one decision rule: positive when the score is above the threshold (MedMNIST's ``score > 0.5``). Every
    decision medclass makes (metrics, per-class table, predictions, the service) goes through it; thresholds chosen
    from scikit-learn's curves (``score >= cut``) are converted to this rule where they are chosen."""
    return np.asarray(positive_scores) > threshold


def predicted_labels(y_score: np.ndarray, task: Task, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Hard predictions: the threshold rule for binary (on the last column) and multi-label tasks, else argmax."""
    y_score = np.asarray(y_score)
    if task == "multilabel":
        return decide_positive(y_score, threshold).astype(np.int64)
    if task == "binary":
        return decide_positive(y_score[:, -1], threshold).astype(np.int64)
    return np.argmax(y_score, axis=1)


@dataclass
class Scores:
    """What a metric sees: true labels, class scores (probabilities), the task, and the decision thresholds of a
    multi-label task (chosen on validation; 0.5 when None). Derived arrays are computed once per instance."""

    y_true: np.ndarray
    y_score: np.ndarray
    task: Task
    thresholds: np.ndarray | None = None
    calibration_bins: int = 15

    def __post_init__(self) -> None:
        self.y_true = np.asarray(self.y_true)
        self.y_score = np.asarray(self.y_score, dtype=np.float64)

    @property
    def n_classes(self) -> int:
        return int(self.y_score.shape[1])

    @cached_property
    def truth(self) -> np.ndarray:
        """int64 labels: (N,) for single-label tasks (labels may arrive as floats), (N, labels) for multi-label."""
        if self.task == "multilabel":
            return self.y_true.astype(np.int64)
        return self.y_true.reshape(-1).astype(np.int64)

    @cached_property
    def y_pred(self) -> np.ndarray:
        return predicted_labels(self.y_score, self.task, 0.5 if self.thresholds is None else self.thresholds)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    definition: str
    compute: Callable[[Scores], float | None] | None  # None: not computed from scores (the loss); else None = n/a
    higher_is_better: bool = True
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"summary"}))

    def __post_init__(self) -> None:
        unknown = set(self.scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"metric {self.name!r}: unknown scope(s) {sorted(unknown)}; known: {', '.join(SCOPES)}")

    @property
    def mode(self) -> str:
        """Lightning's word for the direction: ``max`` or ``min``."""
        return "max" if self.higher_is_better else "min"


class MetricRegistry(Registry[Metric]):
    def add(self, metric: Metric) -> Metric:
        self.register(metric.name)(metric)
        return metric

    def scoped(self, scope: str) -> Iterator[Metric]:
        return (m for m in self.values() if scope in m.scopes)

    def names(self, scope: str) -> tuple[str, ...]:
        return tuple(m.name for m in self.scoped(scope))

    def monitorable(self) -> tuple[str, ...]:
        """What ``checkpoint.monitor`` may name: the headline metrics and the monitor-only ones (the loss)."""
        return tuple(m.name for m in self.values() if m.scopes & {"headline", "monitor"})


METRICS = MetricRegistry("metric", "medclass.metrics.builtin")


def register_metric(
    name: str,
    label: str,
    definition: str,
    *,
    higher_is_better: bool = True,
    scopes: tuple[str, ...] = ("summary",),
) -> Callable[[Callable[[Scores], float | None]], Callable[[Scores], float | None]]:
    """Register ``compute(scores) -> float | None`` (None: the metric does not apply to this task or split)."""

    def decorator(compute: Callable[[Scores], float | None]) -> Callable[[Scores], float | None]:
        all_scopes = set(scopes) | ({"summary", "compare"} if "headline" in scopes else {"summary"})
        METRICS.add(Metric(name, label, definition, compute, higher_is_better, frozenset(all_scopes)))
        return compute

    return decorator


def compute_metrics(scores: Scores, scope: str = "summary") -> dict[str, float]:
    """Every registered metric of ``scope`` that applies (registration order)."""
    values = {}
    for metric in METRICS.scoped(scope):
        if metric.compute is None:
            continue
        value = metric.compute(scores)
        if value is not None:
            values[metric.name] = float(value)
    return values


def headline_metrics(
    y_true: np.ndarray, y_score: np.ndarray, task: Task, thresholds: np.ndarray | None = None
) -> dict[str, float]:
    """The headline metrics (every validation epoch, bootstrap resamples, robustness)."""
    return compute_metrics(Scores(y_true, y_score, task, thresholds), "headline")


def summary_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task: Task,
    thresholds: np.ndarray | None = None,
    calibration_bins: int = 15,
) -> dict[str, float]:
    """Every summary metric that applies to the task (written to metrics.json)."""
    return compute_metrics(Scores(y_true, y_score, task, thresholds, calibration_bins), "summary")


def check_metric(name: str) -> str:
    """A metric the runs' metrics.json can hold (any summary metric of the registry)."""
    known = METRICS.names("summary")
    if name not in known:
        raise UserError(f"unknown metric {name!r}{suggest(name, known)}; choose one of {', '.join(known)}")
    return name


def metric_label(name: str) -> str:
    """``auc`` -> ``AUC (MedMNIST)``; ``val/f1_macro`` or ``val_f1_macro`` -> ``validation F1 macro``; an unknown
    name reads as itself with spaces."""
    for prefix in ("val/", "val_"):
        if name.startswith(prefix):
            return "validation " + metric_label(name[len(prefix) :])
    metric = METRICS.get(name)
    return metric.label if metric is not None else name.replace("_", " ")


def metric_definitions(names: list[str] | None = None) -> dict[str, str]:
    return {m.name: m.definition for m in METRICS.values() if names is None or m.name in names}
