"""``medclass tune``: an Optuna study over the search space the config's ``tune:`` section declares.

Every trial is an ordinary run directory (``<folder>/trials/trial-0007/<timestamp>/``) trained by the one training
path; its objective is the validation metric of its best epoch, and the test split is never evaluated during the
search. Poor trials are pruned at the end of an epoch (Optuna's median rule). The study lives in an Optuna storage
(default: ``study.db``, SQLite, in the tune folder), so a killed search continues where it stopped and processes on
several machines can share one study (``--storage``). At the end: the best recipe as a plain config YAML, a table
and Optuna's plots of the trials, and one retrain of the best recipe with its single test evaluation.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import yaml
from optuna.trial import TrialState

from medclass.chatter import third_party_wanted
from medclass.config import ExperimentConfig, TuneConfig, dump_config, load_config, validate_config
from medclass.config.loading import config_to_dict
from medclass.config.tune import NamedChoices, NumberRange
from medclass.errors import ConfigError, DataError, ModelError, UserError
from medclass.evaluation.compare import PairedDifference, paired_difference
from medclass.experiments.pipeline import ExperimentResult, run_experiment
from medclass.io import atomic_write_text, save_figure
from medclass.metrics import METRICS, metric_label
from medclass.run_dir import RunDir, TuneDir
from medclass.training import train

log = logging.getLogger("medclass")

HEARTBEAT_S, GRACE_S = 30, 120  # a trial whose process died is marked failed GRACE_S after its last heartbeat
# What fails one trial (a combination the space allows but the model or data cannot take) and lets the search go
# on; a stop request, a full disk or a broken run directory stop the search.
TRIAL_FAILURES = (ConfigError, DataError, ModelError, RuntimeError, ValueError)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Failed trials one after another mean the recipe or the data is at fault, not one combination: the search stops
# (a missing dataset once failed 4,800 trials in five minutes).
FAILURES_IN_A_ROW = 3


def parse_budget(text: str) -> float:
    """'45m', '2h', '1h30m', '90s' or a number of minutes -> seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise UserError(f"--budget {text!r}: give a time such as 45m, 2h, 1h30m or 90s")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"--budget {text!r} is no time at all")
    return seconds


class PruneOnValidation(L.Callback):
    """Report the monitored validation metric to the trial after every epoch, and stop training (gracefully, so
    the run directory is complete and says why) when Optuna's pruner says the trial is poor. Optuna's own Lightning
    callback raises inside fit instead, which would leave the run marked failed."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            trainer.should_stop = True


@dataclass
class TunePlan:
    config: ExperimentConfig
    tune: TuneConfig
    folder: TuneDir
    storage: str
    study_name: str

    @property
    def metric(self) -> str:
        return self.tune.metric or self.config.checkpoint.monitor

    @property
    def direction(self) -> str:
        return "maximize" if METRICS[self.metric].higher_is_better else "minimize"

    def recipe(self) -> dict[str, Any]:
        """The config every trial starts from (no tune section; output and name set per trial)."""
        data = config_to_dict(self.config)
        data.pop("tune", None)
        data.pop("output_dir", None)
        return data

    def trial_config(self, values: dict[str, Any], name: str, output_dir: Path) -> ExperimentConfig:
        data = self.recipe()  # a fresh dict each call
        for key, value in values.items():
            data = _set(data, key, value)
        data.update(experiment=name, output_dir=str(output_dir))
        if self.metric != self.config.checkpoint.monitor:  # each trial's best epoch is chosen by the tuned metric
            data["checkpoint"] = {**data.get("checkpoint", {}), "monitor": self.metric, "mode": None}
        return validate_config(data, f"tune trial {name} ({_describe(values)})")


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """``data`` with ``dotted`` set to ``value`` (any YAML value), as an override would."""
    data = dict(data)
    head, _, rest = dotted.partition(".")
    if rest:
        inner = data.get(head)
        data[head] = _set(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        data[head] = value
    return data


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def plan_tune(config: ExperimentConfig, storage: str | None = None) -> TunePlan:
    if config.tune is None:
        raise ConfigError(
            "the config has no tune: section; add one with the search space, e.g. tune: {space: {optimizer.lr: "
            "{low: 1e-4, high: 1e-2, log: true}, model.name: [resnet18, resnet18_cifar]}}"
        )
    folder = TuneDir(Path(config.output_dir) / f"{config.experiment}-tune")
    url = storage or f"sqlite:///{folder.study_path.resolve()}"
    plan = TunePlan(config, config.tune, folder, url, config.experiment)
    changes_loss = sorted(key for key in plan.tune.space if key.split(".")[0] == "loss")
    if plan.metric == "loss" and changes_loss:
        # Label smoothing and class weights change the validation loss itself: a smoothed model's loss cannot fall
        # as low as a plain one's, so trials would be ranked by their loss settings, not by how good they are.
        raise ConfigError(
            f"tune: the validation loss cannot compare trials that change {', '.join(changes_loss)} (it changes the "
            "loss itself); set tune.metric to auc (or another metric), or take those keys out of tune.space"
        )
    for key, entry in plan.tune.space.items():  # every key and value must make a valid config
        plan.trial_config({key: _first(entry)}, "check", folder.trials_dir)
    return plan


def _first(entry: Any) -> Any:
    if isinstance(entry, NumberRange):
        return entry.low
    if isinstance(entry, NamedChoices):
        return next(iter(entry.choices.values()))
    return entry[0]


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """One value per key of the space, drawn by the trial's sampler."""
    values = {}
    for key, entry in space.items():
        if isinstance(entry, NumberRange):
            if entry.whole:
                values[key] = trial.suggest_int(key, entry.low, entry.high, step=entry.step or 1, log=entry.log)
            else:
                values[key] = trial.suggest_float(key, entry.low, entry.high, step=entry.step, log=entry.log)
        elif isinstance(entry, NamedChoices):
            name = trial.suggest_categorical(key, list(entry.choices))
            values[key] = entry.choices[name]
        else:
            values[key] = trial.suggest_categorical(key, list(entry))
    return values


def open_study(plan: TunePlan) -> optuna.Study:
    plan.folder.path.mkdir(parents=True, exist_ok=True)
    storage: Any = plan.storage
    if plan.storage.startswith(("sqlite:", "postgresql", "mysql")):
        engine = {"connect_args": {"timeout": 60}} if plan.storage.startswith("sqlite:") else None  # workers wait
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(plan.storage, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                 grace_period=GRACE_S)  # fmt: skip
    tune = plan.tune
    sampler = (optuna.samplers.TPESampler(seed=tune.seed, n_startup_trials=max(tune.startup_trials, 1))
               if tune.sampler == "tpe" else optuna.samplers.RandomSampler(seed=tune.seed))  # fmt: skip
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
              if tune.pruner == "median" else optuna.pruners.NopPruner())  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_log = logging.getLogger("optuna.study._optimize")  # where Optuna logs a failed trial
    if not any(isinstance(f, OneLineFailures) for f in optuna_log.filters):
        optuna_log.addFilter(OneLineFailures())
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=plan.study_name,
                                direction=plan.direction, load_if_exists=True)  # fmt: skip
    identity = config_to_dict(plan.config)  # the recipe and its search space; not where it is written or how long
    identity.pop("output_dir", None)
    identity["tune"].pop("trials", None)
    recipe = yaml.safe_dump(identity, sort_keys=True)
    stored = study.user_attrs.get("recipe")
    if stored is None:
        study.set_user_attr("recipe", recipe)
        study.set_user_attr("metric", plan.metric)
    elif stored != recipe:
        raise ConfigError(
            f"the study {plan.study_name!r} in {plan.storage} was started with another config or search space; "
            "keep the same config to continue it, or give the new search another experiment name"
        )
    return study


class OneLineFailures(logging.Filter):
    """Optuna logs a failed trial's traceback; its one line (the trial, its values and the error) says what a user
    needs (the whole traceback with --verbose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not third_party_wanted():
            record.exc_info, record.exc_text = None, None
        return True


def objective_for(plan: TunePlan, progress: bool | None):
    monitor = f"val/{plan.metric}"

    def objective(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial)
        except TRIAL_FAILURES as exc:
            trial.set_user_attr("error", (str(exc).splitlines() or [type(exc).__name__])[0][:400])
            raise

    def run_trial(trial: optuna.Trial) -> float:
        values = suggest(trial, plan.tune.space)
        name = f"trial-{trial.number:04d}"
        config = plan.trial_config(values, name, plan.folder.trials_dir)
        log.info("tune: %s: %s", name, _describe(values))
        pruning = PruneOnValidation(trial, monitor)
        result = train(config, progress=progress, callbacks=[pruning])
        if result is None:
            raise optuna.TrialPruned("an extra process of a distributed run")
        run = RunDir(result.run_dir)
        trial.set_user_attr("run_dir", str(run.path))
        trial.set_user_attr("process", os.getpid())
        trial.set_user_attr("minutes", round(result.duration_s / 60, 2))
        if pruning.pruned_at is not None:
            run.update_status(status="pruned", pruned_after_epoch=pruning.pruned_at)
            log.info("tune: %s pruned after epoch %d", name, pruning.pruned_at)
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        if result.best_score is None:
            raise UserError(f"{name}: no validation {metric_label(plan.metric)} was recorded")
        run.update_status(status="trial", objective=result.best_score, objective_metric=monitor)
        return float(result.best_score)

    return objective


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def search(plan: TunePlan, trials: int | None, budget_s: float | None, progress: bool | None = None) -> optuna.Study:
    """Run trials until ``trials`` have finished in the study (all workers together) or ``budget_s`` has passed."""
    study = open_study(plan)
    if trials is None and budget_s is None:
        trials = plan.tune.trials
        if trials is None:
            raise UserError("say how long to search: --trials N, --budget 45m, or tune.trials in the config")
    done = finished_trials(study)
    if trials is not None and done >= trials:
        log.info("tune: the study has %d finished trials already (%d asked for)", done, trials)
        return study
    callbacks = [optuna.study.MaxTrialsCallback(trials, states=FINISHED)] if trials is not None else []
    log.info("tune: %s, %d trial(s) finished so far; study %s in %s", _limit(trials, budget_s), done,
             plan.study_name, plan.storage)  # fmt: skip
    streak = FailureStreak()
    study.optimize(objective_for(plan, progress), n_trials=None if trials is None else trials - done,
                   timeout=budget_s, catch=TRIAL_FAILURES, callbacks=[*callbacks, streak])  # fmt: skip
    if streak.stopped:
        raise UserError(
            f"tune: {streak.count} trials in a row failed, the last with: {streak.last}; the search stopped. Fix the "
            "cause and run the same command again: the study resumes"
        )
    return study


class FailureStreak:
    """An Optuna callback that stops the search after FAILURES_IN_A_ROW failed trials of this process."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.count = 0
            return
        self.count += 1
        self.last = trial.user_attrs.get("error", "see the log above")
        if self.stopped:
            study.stop()

    @property
    def stopped(self) -> bool:
        return self.count >= FAILURES_IN_A_ROW


def _limit(trials: int | None, budget_s: float | None) -> str:
    parts = ([f"{trials} trials"] if trials is not None else []) + (
        [f"a budget of {budget_s / 60:.0f} min"] if budget_s is not None else [])  # fmt: skip
    return " or ".join(parts)


@dataclass
class TuneResult:
    folder: Path
    metric: str
    best_value: float | None
    best_values: dict[str, Any]
    best_config: Path | None
    trials: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)
    final: ExperimentResult | None = None
    runner_up: int | None = None  # the second-best complete trial
    lead: PairedDifference | None = None  # best minus runner-up on the validation images, paired bootstrap

    def lead_sentence(self) -> str | None:
        """Whether the validation split tells the best recipe from the runner-up: a small or easy split ranks noise."""
        if self.lead is None:
            return None
        lead, label = self.lead, metric_label(self.metric)
        said = (
            f"best vs runner-up (trial {self.runner_up}) on the same {lead.n_images} validation images: "
            f"{label} {lead.difference:+.4f} (95% paired bootstrap interval {lead.low:+.4f} to {lead.high:+.4f})"
        )
        if lead.separated:
            return said + "; the lead is beyond resampling noise."
        return (said + "; the interval includes 0, so the validation split cannot tell these recipes apart: weigh "
                "cost and simplicity, or a larger validation split, over the ranking.")  # fmt: skip


def summarise(plan: TunePlan, study: optuna.Study) -> TuneResult:
    """The trial table, Optuna's plots and the best recipe as a config YAML."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append({
            "trial": trial.number, "state": trial.state.name.lower(),
            "value": trial.value, "epochs": (max(trial.intermediate_values) + 1) if trial.intermediate_values else None,
            "minutes": trial.user_attrs.get("minutes"), "params": dict(trial.params),
            "run_dir": trial.user_attrs.get("run_dir"),
        })  # fmt: skip
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    result = TuneResult(plan.folder.path, plan.metric, None, {}, None, rows)
    result.files["csv"] = atomic_write_text(plan.folder.trials_csv, _trials_csv(rows))
    if complete:
        best = study.best_trial
        values = _values_of(plan.tune.space, best.params)
        config = plan.trial_config(values, f"{plan.config.experiment}-best", Path(plan.config.output_dir))
        text = (f"# The best recipe of `medclass tune` (trial {best.number}: validation {metric_label(plan.metric)} "
                f"{best.value:.4f}), chosen on the validation split only.\n# Tried: {_describe(values)}\n"
                + dump_config(config))  # fmt: skip
        result.best_config = atomic_write_text(plan.folder.best_config_path, text)
        result.best_value, result.best_values = float(best.value), values
        result.runner_up, result.lead = _lead(plan, study, best)
    result.files["markdown"] = atomic_write_text(plan.folder.summary_markdown, _markdown(plan, result))
    result.files.update(_plots(plan, study))
    return result


def _lead(
    plan: TunePlan, study: optuna.Study, best: optuna.trial.FrozenTrial
) -> tuple[int | None, PairedDifference | None]:
    """The runner-up trial and the best one's paired lead over it on validation (None when there is no second
    complete trial, the metric is not computed from scores, or a trial's run cannot be read back)."""
    others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number != best.number]
    if not others:
        return None, None
    sign = 1 if plan.direction == "maximize" else -1
    runner_up = max(others, key=lambda t: sign * t.value)
    try:
        lead = paired_difference(best.user_attrs["run_dir"], runner_up.user_attrs["run_dir"], plan.metric,
                                 seed=plan.config.seed)  # fmt: skip
    except (KeyError, UserError) as exc:  # a trial folder moved or deleted since: the table still stands
        log.warning("tune: best vs runner-up not compared: %s", exc)
        return runner_up.number, None
    return runner_up.number, lead


def _values_of(space: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Config values from a trial's parameters (named choices become their values)."""
    return {k: space[k].choices[params[k]] if isinstance(space[k], NamedChoices) else params[k]
            for k in space if k in params}  # fmt: skip


def _trials_csv(rows: list[dict[str, Any]]) -> str:
    keys = sorted({k for row in rows for k in row["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "state", "value", "epochs", "minutes", *keys, "run_dir"])
    for row in rows:
        writer.writerow([row["trial"], row["state"], "" if row["value"] is None else f"{row['value']:.6f}",
                         row["epochs"] or "", row["minutes"] or "", *(row["params"].get(k, "") for k in keys),
                         row["run_dir"] or ""])  # fmt: skip
    return buffer.getvalue()


def _markdown(plan: TunePlan, result: TuneResult) -> str:
    label = metric_label(plan.metric)
    counts = {s: sum(r["state"] == s for r in result.trials) for s in ("complete", "pruned", "fail", "running")}
    lines = [f"# Tuning {plan.config.experiment}", "",
             f"Objective: validation {label} of each trial's best epoch ({plan.direction}); the test split was not "
             "evaluated during the search.", "",
             f"Trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"
             + (f", {counts['running']} running" if counts["running"] else "") + ".", ""]  # fmt: skip
    if result.best_config is not None:
        lines += [f"Best: validation {label} {result.best_value:.4f} with {_describe(result.best_values)}; "
                  f"the recipe: `{result.best_config}`.", ""]  # fmt: skip
        lead = result.lead_sentence()
        if lead is not None:
            lines += [lead[0].upper() + lead[1:], ""]
    ranked = sorted(result.trials, key=lambda r: (r["value"] is None, -(r["value"] or 0) if plan.direction ==
                                                  "maximize" else (r["value"] or 0)))  # fmt: skip
    keys = sorted({k for row in result.trials for k in row["params"]})
    lines += ["| trial | state | " + f"val {label} | epochs | min | " + " | ".join(keys) + " |",
              "|---|---|---|---|---|" + "---|" * len(keys)]  # fmt: skip
    for row in ranked:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        params = " | ".join(_short(row["params"].get(k, "")) for k in keys)
        lines.append(f"| {row['trial']} | {row['state']} | {value} | {row['epochs'] or ''} | "
                     f"{row['minutes'] or ''} | {params} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plots(plan: TunePlan, study: optuna.Study) -> dict[str, Path]:
    """Optuna's matplotlib plots that the study has enough trials for."""
    from matplotlib.ticker import NullFormatter
    from optuna.visualization import matplotlib as plots

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    wanted = {"history": (plots.plot_optimization_history, 1), "intermediate": (plots.plot_intermediate_values, 1),
              "slice": (plots.plot_slice, 1), "importances": (plots.plot_param_importances, 2)}  # fmt: skip
    files = {}
    for name, (plot, needed) in wanted.items():
        if complete < needed:
            continue
        try:
            with warnings.catch_warnings():  # "experimental" notices
                warnings.simplefilter("ignore")
                named = {} if name == "intermediate" else {"target_name": f"validation {metric_label(plan.metric)}"}
                ax = plot(study, **named)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of a space with one value
            log.info("tune: no %s plot (%s)", name, exc)
            continue
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        figure.set_size_inches(max(figure.get_size_inches()[0], 7), 4.5)
        if name == "slice":  # categorical values sit at the panels' edges: their labels met the next panel's
            for axes in figure.axes[:-1]:  # the last is the colour bar
                axes.tick_params(axis="x", labelrotation=25)
        for axes in figure.axes:  # log axes: Optuna labels minor ticks too, and they run into each other
            if axes.get_xscale() == "log":
                axes.xaxis.set_minor_formatter(NullFormatter())
        files[name] = save_figure(figure, plan.folder.plot_path(name))
        import matplotlib.pyplot as plt

        plt.close(figure)  # Optuna draws with pyplot
    return files


def run_tune(
    plan: TunePlan, trials: int | None = None, budget_s: float | None = None, retrain: bool = True,
    progress: bool | None = None,
) -> TuneResult:  # fmt: skip
    started = time.perf_counter()
    study = search(plan, trials, budget_s, progress)
    result = summarise(plan, study)
    log.info("tune: search done in %.1f min", (time.perf_counter() - started) / 60)
    if retrain and result.best_config is not None:
        config = load_config(result.best_config)
        log.info("tune: retraining the best recipe once and evaluating it on the test split")
        result.final = run_experiment(config, progress=progress)
        if result.final is not None:
            lines = ["", f"Retrained once from `{result.best_config}`: {result.final.run_dir}; test "
                     + ", ".join(f"{metric_label(k)} {v:.4f}" for k, v in result.final.test.metrics.items()
                                 if k in METRICS.names('headline')), ""]  # fmt: skip
            text = result.files["markdown"].read_text(encoding="utf-8")
            atomic_write_text(result.files["markdown"], text + "\n".join(lines))
    return result


def worker_threads(workers: int) -> int:
    """Threads per worker process: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)
