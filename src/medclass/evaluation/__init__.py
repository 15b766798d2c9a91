"""Evaluation of a run directory: held-out metrics with intervals, the per-class table, calibration, the report,
robustness and the comparison of runs (the metrics themselves are in :mod:`medclass.metrics`)."""

from medclass.evaluation.compare import Comparison, compare_runs
from medclass.evaluation.evaluate import evaluate_run
from medclass.evaluation.result import EvaluationResult

__all__ = ["Comparison", "EvaluationResult", "compare_runs", "evaluate_run"]
