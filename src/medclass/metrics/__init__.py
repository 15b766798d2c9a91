"""Metrics: the registry (name, label, definition, direction, scopes, computation) and the metrics medclass ships.

Register a new one with :func:`register_metric`; importing this package registers the built-in ones."""

from medclass.metrics import builtin as _builtin  # noqa: F401  (registers the built-in metrics)
from medclass.metrics.base import (
    METRICS,
    Metric,
    Scores,
    check_metric,
    compute_metrics,
    decide_positive,
    headline_metrics,
    metric_definitions,
    metric_label,
    predicted_labels,
    register_metric,
    summary_metrics,
)
from medclass.metrics.builtin import brier_score, confidence_and_correct, expected_calibration_error
from medclass.metrics.medmnist import column_aucs, medmnist_acc, medmnist_auc

__all__ = [
    "METRICS",
    "Metric",
    "Scores",
    "brier_score",
    "check_metric",
    "column_aucs",
    "compute_metrics",
    "confidence_and_correct",
    "decide_positive",
    "expected_calibration_error",
    "headline_metrics",
    "medmnist_acc",
    "medmnist_auc",
    "metric_definitions",
    "metric_label",
    "predicted_labels",
    "register_metric",
    "summary_metrics",
]
