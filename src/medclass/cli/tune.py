"""``medclass tune``: search recipes with Optuna on the validation split, then retrain the best once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from medclass.cli.common import OverridesArgument, app, console, err_console, quiet_lightning, user_errors
from medclass.errors import UserError


@app.command()
@user_errors
def tune(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="Experiment YAML with a tune: section.")],
    overrides: OverridesArgument = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trials to finish (all workers together).")] = None,
    budget: Annotated[
        str | None, typer.Option(help="Search time, e.g. 45m, 2h, 1h30m (trials running then still finish).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL shared by workers on several machines (default: study.db, SQLite, "
            "in the tune folder).",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes, each with its share of the cores.")] = 1,
    retrain: Annotated[
        bool, typer.Option(help="Retrain the best recipe once and evaluate it on the test split.")
    ] = True,
    worker_only: Annotated[bool, typer.Option("--worker-only", hidden=True)] = False,
) -> None:
    """Search the config's tune: space with Optuna (validation metric only; poor trials pruned), resumable; write
    the best recipe as a config, the trial table and plots, then retrain the best once and test it."""
    from medclass.config import load_config

    experiment = load_config(config, overrides or [])
    from medclass.experiments.tune import parse_budget, plan_tune, run_tune, search, worker_threads

    budget_s = parse_budget(budget) if budget is not None else None
    plan = plan_tune(experiment, storage)
    quiet_lightning(ctx)
    if worker_only:
        search(plan, trials, budget_s)
        return
    if workers > 1:
        from medclass.experiments.tune import open_study

        open_study(plan)  # created (and the config checked) once, before the workers share it
        _run_workers(config, overrides or [], trials, budget, plan.storage, workers, worker_threads(workers))
        result = run_tune(plan, trials=0, retrain=retrain)  # the workers searched: summarise and retrain
    else:
        result = run_tune(plan, trials, budget_s, retrain)
    _print(result)


def _run_workers(config: Path, overrides: list[str], trials: int | None, budget: str | None, storage: str,
                 workers: int, threads: int) -> None:  # fmt: skip
    """N copies of this command as worker processes on one study, each with ``threads`` threads."""
    command = [sys.executable, "-m", "medclass.cli.app", "tune", "-c", str(config), *overrides, "--worker-only",
               "--storage", storage]  # fmt: skip
    if trials is not None:
        command += ["--trials", str(trials)]
    if budget is not None:
        command += ["--budget", budget]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    console.print(f"tune: {workers} worker processes with {threads} thread(s) each", highlight=False)
    processes = [subprocess.Popen(command, env=env) for _ in range(workers)]
    failed = [p.args for p in processes if p.wait() != 0]
    if failed:
        raise UserError(f"{len(failed)} of {workers} tune workers failed (their errors are above)")


def _print(result) -> None:
    from medclass.cli.render import metrics_table
    from medclass.metrics import metric_label

    states = [row["state"] for row in result.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running") if states.count(s))
    console.print(f"trials: {counts or 'none'}", highlight=False)
    if result.best_config is None:
        err_console.print("[bold yellow]warning:[/] no trial completed, so there is no best recipe", highlight=False)
    else:
        console.print(
            f"best: validation {metric_label(result.metric)} {result.best_value:.4f} with "
            + ", ".join(f"{k}={v}" for k, v in result.best_values.items()),
            highlight=False,
            soft_wrap=True,
        )
        lead = result.lead_sentence()
        if lead is not None:
            console.print(lead, highlight=False, soft_wrap=True)
        console.print(f"best recipe: {result.best_config}", highlight=False, soft_wrap=True)
    if result.final is not None:
        console.print(metrics_table(result.final.test))
        console.print(f"retrained best recipe: {result.final.run_dir}", highlight=False, soft_wrap=True)
    console.print(f"tune: {result.files['markdown']} (and trials.csv, plots)", highlight=False, soft_wrap=True)
