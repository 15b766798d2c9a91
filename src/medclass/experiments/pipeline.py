"""One experiment, start to finish: train (or resume) -> evaluate the best checkpoint on the held-out test split
(metrics with intervals, calibration, predictions, the report) -> the test results to the trackers -> run.json
says ``finished``. The CLI's ``train``, the Python API and the benchmark all go through here."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, fields
from pathlib import Path

from medclass.config import ExperimentConfig
from medclass.evaluation import EvaluationResult, evaluate_run
from medclass.run_dir import RunDir
from medclass.training import TrainResult, resume, train
from medclass.training.tracking import log_results


@dataclass(kw_only=True)
class ExperimentResult(TrainResult):
    test: EvaluationResult  # the best checkpoint on the held-out test split


def run_experiment(config: ExperimentConfig, progress: bool | None = None) -> ExperimentResult | None:
    """Train the model the config describes, keep the best validation epoch and evaluate it on the test split.
    Returns None in the extra processes of a distributed run (only rank 0 evaluates and reports)."""
    started = time.perf_counter()
    return _evaluate(train(config, progress), started)


def resume_experiment(run_dir: str | Path, progress: bool | None = None) -> ExperimentResult | None:
    """Continue a stopped run (from its last checkpoint, or from its test evaluation when training had ended)."""
    started = time.perf_counter()
    return _evaluate(resume(run_dir, progress), started)


def _evaluate(trained: TrainResult | None, started: float) -> ExperimentResult | None:
    if trained is None:
        return None
    run = RunDir(trained.run_dir)
    test = evaluate_run(run.path, "best", "test", dataset=trained.dataset)
    log_results(trained.loggers, run, test.metrics, trained.steps)
    duration = time.perf_counter() - started
    finished = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    run.update_status(status="finished", finished=finished, duration_s=round(duration, 1))
    trained_fields = {f.name: getattr(trained, f.name) for f in fields(TrainResult)}
    return ExperimentResult(**{**trained_fields, "duration_s": duration}, test=test)
