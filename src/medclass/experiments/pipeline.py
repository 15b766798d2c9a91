"""One experiment, start to finish: train (or resume) -> evaluate the best checkpoint on the held-out test split
-> the gate in front of the model (fitted on the train split, its threshold on validation) -> (metrics with
intervals, calibration, predictions, the report) -> the test results to the trackers -> run.json says ``finished``.
The CLI's ``train``, the Python API and the benchmark all go through here."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from medclass.config import ExperimentConfig
from medclass.errors import RunInterrupted, UserError
from medclass.evaluation import EvaluationResult, evaluate_run
from medclass.evaluation.gate import fit_gate
from medclass.run_dir import RunDir
from medclass.training import TrainResult, resume, train
from medclass.training.tracking import log_results


@dataclass(kw_only=True)
class ExperimentResult(TrainResult):
    test: EvaluationResult  # the best checkpoint on the held-out test split
    gate: dict[str, Any] | None = None  # the gate's settings, or {"not_fitted": reason}; None when switched off


log = logging.getLogger(__name__)


def run_experiment(config: ExperimentConfig, progress: bool | None = None) -> ExperimentResult | None:
    """Train the model the config describes, keep the best validation epoch and evaluate it on the test split.
    Returns None in the extra processes of a distributed run (only rank 0 evaluates and reports)."""
    started = time.perf_counter()
    return _evaluate(train(config, progress), started)


def resume_experiment(run_dir: str | Path, progress: bool | None = None) -> ExperimentResult | None:
    """Continue a stopped run (from its last checkpoint, or from its test evaluation when training had ended)."""
    started = time.perf_counter()
    return _evaluate(resume(run_dir, progress), started)


class _StopRequested(BaseException):
    """SIGINT or SIGTERM after the last epoch. A BaseException, so that nothing between the signal and
    :func:`_evaluate` (Lightning's predict loop, a library's ``except Exception``) takes it for an error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stops_requested() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`_StopRequested` (Lightning's own SIGTERM handler, installed while it
    predicts, calls this one after its own). Signals reach the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _StopRequested(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _evaluate(trained: TrainResult | None, started: float) -> ExperimentResult | None:
    """After the last epoch: the gate, the test evaluation, the trackers, run.json ``finished``; each step said on
    the console as it starts. A stop requested meanwhile (SIGINT, SIGTERM) keeps the trained model, records
    ``interrupted`` with the step, and names the command that finishes the run."""
    if trained is None:
        return None
    run, step = RunDir(trained.run_dir), "gate fit"
    try:
        with _stops_requested():
            if not run.load_config().gate.fit:
                step = "test evaluation"
            gate = _fit_gate(run, trained)  # before the evaluation, whose report describes it
            step = "test evaluation"
            n_test = len(trained.dataset.splits["test"]) if "test" in trained.dataset.splits else 0
            log.info("evaluating the best checkpoint on the test split (%d images): metrics, intervals, report", n_test)
            test = evaluate_run(run.path, "best", "test", dataset=trained.dataset)
            log_results(trained.loggers, run, test.metrics, trained.steps)
            duration = time.perf_counter() - started
            finished = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
            run.update_status(status="finished", finished=finished, duration_s=round(duration, 1))
    except _StopRequested as stop:
        name = signal.Signals(stop.signum).name
        now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        run.update_status(status="interrupted", signal=name, interrupted_in=step, interrupted=now)
        raise RunInterrupted(
            f"stopped by {name} during the {step}, after training: the trained model is kept (checkpoints/best.ckpt); "
            f"finish the run with `medclass train --resume {run.path}` (it evaluates and trains nothing)",
            exit_code=128 + stop.signum,
        ) from None
    trained_fields = {f.name: getattr(trained, f.name) for f in fields(TrainResult)}
    return ExperimentResult(**{**trained_fields, "duration_s": duration}, test=test, gate=gate)


def _fit_gate(run: RunDir, trained: TrainResult) -> dict[str, Any] | None:
    """The gate for the best checkpoint; a gate that cannot be fitted is said in run.json, the run still counts."""
    if not run.load_config().gate.fit:
        run.update_status(gate="not fitted: gate.fit is false")
        return None
    log.info("fitting the gate (which images the model should refuse) on the train split, its threshold on validation")
    try:
        gate = fit_gate(run.path, "best", dataset=trained.dataset)
    except (UserError, ValueError, RuntimeError, AssertionError) as exc:  # pytorch-ood asserts on its input
        reason = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("the gate could not be fitted (%s); predict and serve will not check images", reason)
        run.update_status(gate=f"not fitted: {reason}")
        return {"not_fitted": reason}
    run.update_status(gate={"fitted": True, "val": gate["val"]})
    return gate
