"""Evaluation: metrics (MedMNIST definitions and more) and run evaluation."""

from medclass.evaluation.compare import Comparison, compare_runs
from medclass.evaluation.evaluate import EvaluationResult, evaluate_run
from medclass.evaluation.medmnist_metrics import medmnist_acc, medmnist_auc
from medclass.evaluation.metrics import HEADLINE_METRICS, classification_metrics, predicted_labels

__all__ = [
    "HEADLINE_METRICS",
    "Comparison",
    "EvaluationResult",
    "compare_runs",
    "classification_metrics",
    "evaluate_run",
    "medmnist_acc",
    "medmnist_auc",
    "predicted_labels",
]
