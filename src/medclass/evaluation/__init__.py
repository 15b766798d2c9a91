"""Evaluation of a run directory: held-out metrics with intervals, the per-class table, calibration, the report,
robustness and the comparison of runs (the metrics themselves are in :mod:`medclass.metrics`; the names below are
imported on first use: see medclass.lazy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medclass.lazy import lazy_exports

if TYPE_CHECKING:
    from medclass.evaluation.compare import Comparison, compare_runs
    from medclass.evaluation.evaluate import evaluate_run
    from medclass.evaluation.result import EvaluationResult

_EXPORTS = {
    "Comparison": "medclass.evaluation.compare",
    "EvaluationResult": "medclass.evaluation.result",
    "compare_runs": "medclass.evaluation.compare",
    "evaluate_run": "medclass.evaluation.evaluate",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["Comparison", "EvaluationResult", "compare_runs", "evaluate_run"]
