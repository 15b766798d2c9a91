"""Several runs of one recipe read as one result: k-fold cross-validation (``medclass cv``) and repeats with other
seeds (``medclass train --seeds``, ``medclass cv --seeds``).

Every member is an ordinary run directory (``<folder>/<member>/<timestamp>/``) made by the one experiment pipeline,
so evaluate, predict, export and compare read it like any run. The folder's ``series.json`` names the members and
the shared config; the folder's name is fixed by the config (``<output_dir>/<experiment>-cv``), so processes on
several machines (a cluster job array, one ``--fold`` each) write into one series without talking to each other, a
member that finished is never trained again, and a stopped series continues where it stopped.

A cross-validation fold holds out its fold as its ``test`` split (see ``data.fold``): its test metrics are
out-of-fold metrics, and the dataset's test split is read by none of them.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure

from medclass.config import ExperimentConfig, FoldConfig, validate_config
from medclass.config.loading import config_to_dict
from medclass.data import load_dataset
from medclass.errors import ConfigError, RunDirError
from medclass.evaluation.bootstrap import Intervals, headline_intervals
from medclass.evaluation.evaluate import read_predictions
from medclass.evaluation.label_issues import (
    SHEET,
    LabelIssues,
    label_issues_markdown,
    rank_label_issues,
    write_label_issues,
)
from medclass.experiments.pipeline import run_experiment
from medclass.inference.assess import assess_package
from medclass.inference.package import add_to_source, load_package, run_package, save_ensemble
from medclass.io import atomic_write_json, atomic_write_text, save_figure
from medclass.metrics import METRICS, metric_label, summary_metrics
from medclass.run_dir import RunDir, SeriesDir
from medclass.wording import interval_text

log = logging.getLogger("medclass")

Kind = Literal["cv", "seeds"]


@dataclass(frozen=True)
class Member:
    """One run of the series: its folder name, training seed and (cross-validation) held-out fold."""

    name: str
    seed: int
    fold: int | None = None

    def describe(self) -> str:
        return f"fold {self.fold}, seed {self.seed}" if self.fold is not None else f"seed {self.seed}"


@dataclass
class SeriesPlan:
    kind: Kind
    folder: SeriesDir
    config: ExperimentConfig  # the shared recipe, as given
    members: list[Member]
    k: int | None = None
    fold_seed: int | None = None

    def member_config(self, member: Member) -> ExperimentConfig:
        """The member's own config: the recipe with its seed (and fold), writing under the series folder."""
        update: dict[str, Any] = {"seed": member.seed, "output_dir": self.folder.path, "experiment": member.name}
        if member.fold is not None:
            fold = FoldConfig(k=self.k, index=member.fold, seed=self.fold_seed)
            update["data"] = self.config.data.model_copy(update={"fold": fold})
        return self.config.model_copy(update=update)

    def manifest(self) -> dict[str, Any]:
        recipe = config_to_dict(self.config)
        recipe.pop("output_dir", None)
        return {
            "kind": self.kind,
            "experiment": self.config.experiment,
            **({"k": self.k, "fold_seed": self.fold_seed} if self.kind == "cv" else {}),
            "seeds": sorted({m.seed for m in self.members}),
            "members": [{"name": m.name, "seed": m.seed, "fold": m.fold} for m in self.members],
            "config": recipe,
        }


def _seed_list(config: ExperimentConfig, seeds: list[int] | None) -> list[int]:
    seeds = list(seeds) if seeds else [config.seed]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {seeds}")
    for seed in seeds:
        if not 0 <= seed < 2**32:
            raise ConfigError(f"--seeds: {seed} is outside 0 <= seed < 2**32")
    return seeds


def plan_cv(
    config: ExperimentConfig, folds: int, seeds: list[int] | None = None, fold_seed: int = 0,
    folder: Path | None = None,
) -> SeriesPlan:  # fmt: skip
    """k-fold cross-validation of the recipe, once per seed (default: the config's seed)."""
    if config.data.fold is not None:
        raise ConfigError("data.fold is set in the config; `medclass cv` sets it for each fold: remove it")
    validate_config({"k": folds, "index": 1, "seed": fold_seed}, "--folds/--fold-seed", FoldConfig)
    seeds = _seed_list(config, seeds)
    several = len(seeds) > 1
    members = [
        Member(f"fold{k}-seed{seed}" if several else f"fold{k}", seed, k) for seed in seeds for k in range(1, folds + 1)
    ]
    where = SeriesDir(folder or Path(config.output_dir) / f"{config.experiment}-cv{folds}")
    return SeriesPlan("cv", where, config, members, k=folds, fold_seed=fold_seed)


def plan_seeds(config: ExperimentConfig, seeds: list[int], folder: Path | None = None) -> SeriesPlan:
    """The recipe trained once per seed, each evaluated on the test split."""
    seeds = _seed_list(config, seeds)
    if len(seeds) < 2:
        raise ConfigError("--seeds needs at least two seeds to repeat a run, e.g. --seeds 1,2,3")
    members = [Member(f"seed{seed}", seed) for seed in seeds]
    where = SeriesDir(folder or Path(config.output_dir) / f"{config.experiment}-seeds")
    return SeriesPlan("seeds", where, config, members)


def start_series(plan: SeriesPlan) -> None:
    """Write the manifest, or check that the folder holds this very series."""
    folder = plan.folder
    manifest = plan.manifest()
    if folder.manifest_path.is_file():
        stored = folder.read_manifest()
        stored.pop("format_version", None)
        if stored != manifest:
            differs = sorted(k for k in manifest if stored.get(k) != manifest[k])
            raise ConfigError(
                f"{folder.path} holds another series (its {' and '.join(differs)} "
                f"{'differs' if len(differs) == 1 else 'differ'} from this call's): keep the "
                "same config, folds and seeds to continue it, or give the new one another experiment name"
            )
        return
    folder.write_manifest(manifest)


@dataclass
class SeriesResult:
    folder: Path
    kind: Kind
    rows: list[dict[str, Any]]  # one per member: name, fold, seed, n, metrics, best_epoch, minutes, run_dir
    aggregate: dict[str, dict[str, float | None]]  # metric -> mean, sd, min, max, n
    headline: dict[str, Any]
    pooled: list[dict[str, Any]] = field(default_factory=list)  # cv: per seed, out-of-fold metrics + intervals
    ensemble: dict[str, Any] = field(default_factory=dict)  # the package and test metrics of it and its members
    files: dict[str, Path] = field(default_factory=dict)
    label_issues: LabelIssues | None = None  # cv: train+val images whose label the out-of-fold model doubts


def run_series(plan: SeriesPlan, folds: set[int] | None = None, progress: bool | None = None) -> SeriesResult | None:
    """Train every member that has not finished (only the folds in ``folds`` when given); collect the series
    when all members have finished (None while some have not)."""
    start_series(plan)
    chosen = [m for m in plan.members if folds is None or m.fold in folds]
    for position, member in enumerate(chosen, 1):
        done = plan.folder.finished_run(member.name)
        if done is not None:
            log.info("%s (%s) finished already: %s", member.name, member.describe(), done.path)
            continue
        log.info("%s %d of %d: %s (%s)", plan.kind, position, len(chosen), member.name, member.describe())
        result = run_experiment(plan.member_config(member), progress=progress)
        if result is not None:  # the member's result before the next one starts
            headline = METRICS.names("headline")
            shown = ", ".join(f"{metric_label(k)} {v:.4f}" for k, v in result.test.metrics.items() if k in headline)
            held = "images of its held-out fold" if plan.kind == "cv" else "test images"
            log.info("%s done: %s on %d %s (%s)", member.name, shown, result.test.n_samples, held, result.run_dir)
    waiting = [m.name for m in plan.members if plan.folder.finished_run(m.name) is None]
    if waiting:
        log.info("%s: %d member(s) still to run (%s)", plan.folder.path, len(waiting), ", ".join(waiting))
        return None
    return collect_series(plan.folder.path)


def collect_series(path: str | Path) -> SeriesResult:
    """Read every member's finished run and write the series' summary (mean, SD, spread, pooled out-of-fold)."""
    folder = SeriesDir(path)
    manifest = folder.read_manifest()
    members = [Member(m["name"], m["seed"], m.get("fold")) for m in manifest["members"]]
    runs = {m.name: folder.finished_run(m.name) for m in members}
    missing = [m for m in members if runs[m.name] is None]
    if missing:
        listed = ", ".join(f"{m.name} ({m.describe()})" for m in missing)
        how = "run `medclass cv` again with the same config (finished folds are kept), or --fold K for each"
        if manifest["kind"] == "seeds":
            how = "run `medclass train --seeds` again with the same config (finished seeds are kept)"
        raise RunDirError(
            f"{folder.path}: {len(missing)} of {len(members)} member(s) have not finished: {listed}; {how}"
        )
    rows = [_member_row(m, runs[m.name]) for m in members]
    names = list(METRICS.names("headline"))
    aggregate = {name: _spread([row["metrics"].get(name) for row in rows]) for name in names}
    config = runs[members[0].name].load_config()
    pooled = _pooled_out_of_fold(members, runs, config, manifest) if manifest["kind"] == "cv" else []
    headline = _headline(manifest, config, aggregate, pooled, len(members))
    ensemble = _ensemble(folder, members, runs, config)
    result = SeriesResult(folder.path, manifest["kind"], rows, aggregate, headline, pooled, ensemble)
    if manifest["kind"] == "cv":
        result.label_issues = _label_issues(folder, members, runs, config)
    result.files = _write_summary(folder, manifest, result)
    return result


def _label_issues(folder: SeriesDir, members: list[Member], runs: dict[str, RunDir], config: ExperimentConfig
                  ) -> LabelIssues:  # fmt: skip
    """Every train+val image's out-of-fold probabilities (the mean over seeds), ranked by cleanlab; the csv and
    a contact sheet of the most doubtful images."""
    data = runs[members[0].name].read_data_summary()
    classes, task = data["classes"], data["task"]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    labels: dict[str, np.ndarray] = {}
    for member in members:
        targets, scores, sources = read_predictions(runs[member.name].predictions_path("test"), classes, task)
        for target, score, source in zip(targets, scores, sources, strict=True):
            sums[source] = sums.get(source, 0) + score
            counts[source] = counts.get(source, 0) + 1
            labels[source] = target
    sources = list(sums)
    issues = rank_label_issues(np.array([labels[s] for s in sources]),
                               np.stack([sums[s] / counts[s] for s in sources]), sources, classes, task)  # fmt: skip
    if issues.unavailable:
        log.warning("label issues not ranked: %s", issues.unavailable)
        return issues
    dataset = load_dataset(config.data.model_copy(update={"fold": None}))
    wanted = {row["source"] for row in issues.rows[:SHEET]}
    images = {}
    for split in ("train", "val"):
        for i, name in enumerate(dataset.sources(split)):
            for key in (name, str(Path(dataset.source.get("root", "")) / name)):
                if key in wanted:
                    images[key] = dataset.splits[split].image(i)
    return write_label_issues(issues, folder.label_issues_csv, folder.label_issues_sheet, images)


def _member_row(member: Member, run: RunDir) -> dict[str, Any]:
    metrics = run.read_metrics()
    status = run.read_status()
    return {
        "name": member.name,
        "fold": member.fold,
        "seed": member.seed,
        "n": metrics.get("n_samples"),
        "metrics": metrics.get("metrics", {}),
        "best_epoch": status.get("best_epoch"),
        "minutes": round(status["duration_s"] / 60, 2) if status.get("duration_s") is not None else None,
        "run_dir": str(run.path),
    }


def _spread(values: list[float | None]) -> dict[str, float | None]:
    """Mean, sample SD (None for one value), min and max of the values that are numbers."""
    numbers = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(numbers) == 0:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(numbers.mean()),
        "sd": float(numbers.std(ddof=1)) if len(numbers) > 1 else None,
        "min": float(numbers.min()),
        "max": float(numbers.max()),
        "n": len(numbers),
    }


def _pooled_out_of_fold(
    members: list[Member], runs: dict[str, RunDir], config: ExperimentConfig, manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per seed: every fold's held-out predictions together, scored as one set, with bootstrap intervals. Each
    train+val image is scored exactly once, by the fold model that never saw it."""
    data = runs[members[0].name].read_data_summary()
    classes, task = data["classes"], data["task"]
    settings = config.evaluation
    pooled = []
    for seed in manifest["seeds"]:
        targets, scores, sources = [], [], []
        for member in (m for m in members if m.seed == seed):
            run = runs[member.name]
            if not run.predictions_path("test").is_file():
                raise RunDirError(f"{run.path} has no {run.predictions_path('test').name}; evaluate it again")
            t, s, names = read_predictions(run.predictions_path("test"), classes, task)
            targets.append(t)
            scores.append(s)
            sources += names
        if len(set(sources)) != len(sources):
            raise RunDirError(f"{manifest['experiment']}: the folds of seed {seed} share images; the series is broken")
        y_true, y_score = np.concatenate(targets), np.concatenate(scores)
        metrics = summary_metrics(y_true, y_score, task, None, settings.calibration_bins)
        intervals = Intervals()
        if settings.bootstrap:
            intervals = headline_intervals(
                y_true, y_score, task, None, settings.bootstrap, settings.confidence, manifest.get("fold_seed", 0)
            )
        pooled.append({"seed": seed, "n": len(y_true), "metrics": metrics, "intervals": intervals.as_json(),
                       "intervals_undefined": intervals.undefined, "confidence": settings.confidence})  # fmt: skip
    return pooled


def _ensemble(folder: SeriesDir, members: list[Member], runs: dict[str, RunDir], config: ExperimentConfig
              ) -> dict[str, Any]:  # fmt: skip
    """The members as one package (probabilities averaged), and the test split scored by it and by each member.
    For cross-validation this is the first and only time the test split is read."""
    packages = [load_package(run_package(runs[m.name].path)) for m in members]
    source = {"series": str(folder.path.resolve()), "members": [str(runs[m.name].path.resolve()) for m in members],
              "experiment": config.experiment}  # fmt: skip
    path = save_ensemble(folder.ensemble_dir, packages, source)
    ensemble = load_package(path)
    data = config.data.model_copy(update={"fold": None})  # the dataset's own splits: its test split
    dataset = load_dataset(data)
    scored = [(m.name, package) for m, package in zip(members, packages, strict=True)] + [("ensemble", ensemble)]
    results = {}
    for name, package in scored:
        settings = config.evaluation if name == "ensemble" else config.evaluation.model_copy(update={"bootstrap": 0})
        assessed = assess_package(package, dataset, "test", settings, seed=config.seed)
        results[name] = {"metrics": assessed.metrics}
        if name == "ensemble":
            results[name].update(
                intervals={n: (list(assessed.intervals[n]) if n in assessed.intervals else None)
                           for n in assessed.interval_methods},
                intervals_undefined=assessed.undefined_intervals, weak=assessed.extra["weak"],
            )  # fmt: skip
    add_to_source(path, test_metrics=results["ensemble"]["metrics"])
    names = list(METRICS.names("headline"))
    member_spread = {n: _spread([results[m.name]["metrics"].get(n) for m in members]) for n in names}
    sources = dataset.sources("test")
    return {
        "package": str(path),
        "combine": "mean of the members' probabilities (uncalibrated; decisions at P > 0.5 or argmax)",
        "n_test": len(dataset.splits["test"]),
        "test_source": sources[0].rsplit(":", 1)[0] if sources and ":" in sources[0] else dataset.name,
        "members": {m.name: results[m.name]["metrics"] for m in members},
        "members_mean_sd": member_spread,
        "ensemble": results["ensemble"],
        "confidence": config.evaluation.confidence,
    }


def _headline(
    manifest: dict[str, Any], config: ExperimentConfig, aggregate: dict[str, dict[str, float | None]],
    pooled: list[dict[str, Any]], n_members: int,
) -> dict[str, Any]:  # fmt: skip
    """Which number to quote, and why."""
    metric = config.checkpoint.monitor if config.checkpoint.monitor in aggregate else "auc"
    stats = aggregate[metric]
    if manifest["kind"] == "cv":
        k, seeds = manifest["k"], manifest["seeds"]
        over = f"{k} folds" + (f" x {len(seeds)} seeds" if len(seeds) > 1 else "")
        why = (
            f"the mean and SD of the out-of-fold {metric_label(metric)} over {over} ({n_members} runs): the form in "
            "which k-fold results are reported and compared. Each fold's model chose its best epoch on a "
            "validation share of its own training folds and scored its held-out fold once. The pooled out-of-fold "
            "value (all train+val images scored once) is the single estimate with a bootstrap interval. The test "
            "split was not used by any fold."
        )
    else:
        why = (
            f"the mean and SD of the test {metric_label(metric)} over {n_members} seeds: one training run's number "
            "depends on its seed (the min-max spread shows how far one run can land); the mean is what this recipe "
            "gives when trained once, the SD how much that varies. Every seed used the same split."
        )
    return {"metric": metric, "mean": stats["mean"], "sd": stats["sd"], "n": stats["n"], "why": why}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _mean_sd(stats: dict[str, float | None]) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.4f}" + (f" +- {stats['sd']:.4f}" if stats["sd"] is not None else "")


def _write_summary(folder: SeriesDir, manifest: dict[str, Any], result: SeriesResult) -> dict[str, Path]:
    names = list(METRICS.names("headline"))
    files = {}
    summary = {
        "kind": result.kind,
        "experiment": manifest["experiment"],
        **({"k": manifest["k"], "fold_seed": manifest["fold_seed"]} if result.kind == "cv" else {}),
        "seeds": manifest["seeds"],
        "split": "out-of-fold (each fold's held-out part of train+val)" if result.kind == "cv" else "test",
        "headline": result.headline,
        "aggregate": result.aggregate,
        **({"pooled_out_of_fold": result.pooled} if result.kind == "cv" else {}),
        **(
            {
                "label_issues": {
                    "flagged": len(result.label_issues.rows),
                    "images": result.label_issues.n_images,
                    "unavailable": result.label_issues.unavailable or None,
                    "top": result.label_issues.rows[:25],
                }
            }
            if result.label_issues is not None
            else {}
        ),
        "members": result.rows,
        "ensemble": result.ensemble,
    }
    files["summary"] = atomic_write_json(folder.summary_path, summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = ["member", "fold", "seed", "n", *names, "best_epoch", "minutes", "run_dir"]
    writer.writerow(columns)
    for row in result.rows:
        writer.writerow([row["name"], row["fold"] or "", row["seed"], row["n"],
                         *(_fmt(row["metrics"].get(m)) for m in names), row["best_epoch"] or "",
                         _fmt(row["minutes"], 2), row["run_dir"]])  # fmt: skip
    files["csv"] = atomic_write_text(folder.members_csv, buffer.getvalue())
    files["markdown"] = atomic_write_text(folder.summary_markdown, _markdown(manifest, result, names))
    files["plot"] = _plot(folder.members_plot, result, names)
    return files


def _markdown(manifest: dict[str, Any], result: SeriesResult, names: list[str]) -> str:
    headline = result.headline
    title = (f"{manifest['k']}-fold cross-validation" if result.kind == "cv" else "Repeated runs") + \
        f" of {manifest['experiment']}"  # fmt: skip
    lines = [f"# {title}", ""]
    lines += [f"**Headline: {metric_label(headline['metric'])} {_mean_sd(result.aggregate[headline['metric']])}** "
              f"(mean +- SD, n = {headline['n']})", "", f"Why this number: {headline['why']}", ""]  # fmt: skip
    split = "out-of-fold" if result.kind == "cv" else "test"
    lines += [f"## Over the members ({split} split)", "", "| metric | mean +- SD | min | max |", "|---|---|---|---|"]
    for name in names:
        stats = result.aggregate[name]
        lines.append(f"| {metric_label(name)} | {_mean_sd(stats)} | {_fmt(stats['min'])} | {_fmt(stats['max'])} |")
    for pooled in result.pooled:
        percent = f"{pooled['confidence']:.0%}"
        lines += ["", f"## Pooled out-of-fold, seed {pooled['seed']} ({pooled['n']} images, {percent} "
                  "intervals: Wilson for accuracy, percentile bootstrap for the others)", "",
                  f"| metric | value | {percent} interval |", "|---|---|---|"]  # fmt: skip
        for name in names:
            value, interval = pooled["metrics"].get(name), pooled["intervals"].get(name)
            shown = interval_text(interval, 4, dash=" - ", computed=name in pooled["intervals"])
            lines.append(f"| {metric_label(name)} | {_fmt(value)} | {shown} |")
        lines += _undefined_lines(pooled.get("intervals_undefined") or {})
    if result.label_issues is not None:
        where = SeriesDir(result.folder)
        lines += label_issues_markdown(result.label_issues, where.label_issues_sheet.name, where.label_issues_csv.name)
    lines += _ensemble_markdown(result, names)
    lines += ["", "## Members", "", "| member | n | " + " | ".join(metric_label(m) for m in names) +
              " | best epoch | minutes |", "|---|---|" + "---|" * len(names) + "---|---|"]  # fmt: skip
    for row in result.rows:
        values = " | ".join(_fmt(row["metrics"].get(m)) for m in names)
        epoch, minutes = row["best_epoch"] or "", _fmt(row["minutes"], 1)
        lines.append(f"| {row['name']} | {row['n']} | {values} | {epoch} | {minutes} |")
    lines += ["", "Each member is a run directory (see members.csv); `medclass evaluate` and `predict` read them."]
    return "\n".join(lines) + "\n"


def _ensemble_markdown(result: SeriesResult, names: list[str]) -> list[str]:
    ensemble = result.ensemble
    if not ensemble:
        return []
    when = " (read once, after every fold had finished)" if result.kind == "cv" else ""
    percent = f"{ensemble['confidence']:.0%}"
    lines = ["", f"## Test split: the members and their ensemble{when}", "",
             f"The ensemble averages the members' probabilities; its package is `{ensemble['package']}`. "
             f"{ensemble['n_test']} test images.", "",
             "| model | " + " | ".join(metric_label(m) for m in names) + " |",
             "|---|" + "---|" * len(names)]  # fmt: skip
    for member, metrics in ensemble["members"].items():
        lines.append(f"| {member} | " + " | ".join(_fmt(metrics.get(m)) for m in names) + " |")
    spread = ensemble["members_mean_sd"]
    lines.append("| members, mean +- SD | " + " | ".join(_mean_sd(spread[m]) for m in names) + " |")
    own = ensemble["ensemble"]
    cells = []
    for name in names:
        bounds = own.get("intervals", {})
        shown = interval_text(bounds.get(name), 4, dash=" - ", computed=name in bounds)
        cells.append(_fmt(own["metrics"].get(name)) + (f" ({shown})" if shown else ""))
    lines.append(f"| **ensemble** ({percent} CI) | " + " | ".join(cells) + " |")
    lines += _undefined_lines(own.get("intervals_undefined") or {})
    lines += ["", *(f"- {note}" for note in own.get("weak", []))] if own.get("weak") else []
    return lines


def _undefined_lines(undefined: dict[str, str]) -> list[str]:
    """Why an interval of the table above is undefined (never a zero-width range)."""
    return ["", *(f"- {metric_label(name)}: interval undefined: {reason}" for name, reason in undefined.items())] \
        if undefined else []  # fmt: skip


def _yerr(value: float, interval: list[float] | None) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bar for a value and its interval (none without one)."""
    return None if not interval else [[value - interval[0]], [interval[1] - value]]


def _plot(path: Path, result: SeriesResult, names: list[str]) -> Path:
    """One panel per headline metric: every member's value, the mean and the +-SD band (and, for
    cross-validation, each seed's pooled out-of-fold value with its interval; for seeds, the ensemble's own test
    value with its interval: the same split as the members')."""
    fig = Figure(figsize=(3.2 * len(names), 3.6), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    labels = [row["name"] for row in result.rows]
    x = np.arange(len(labels))
    for ax, name in zip(axes, names, strict=True):
        values = np.array([row["metrics"].get(name, np.nan) for row in result.rows], dtype=float)
        stats = result.aggregate[name]
        ax.plot(x, values, "o", color="#1f77b4", label="member")
        if stats["mean"] is not None:
            ax.axhline(stats["mean"], color="#1f77b4", lw=1, label="mean")
            if stats["sd"] is not None:
                ax.axhspan(stats["mean"] - stats["sd"], stats["mean"] + stats["sd"], color="#1f77b4", alpha=0.12,
                           label="+-1 SD")  # fmt: skip
        for i, pooled in enumerate(result.pooled):
            value, interval = pooled["metrics"].get(name), pooled["intervals"].get(name)
            if value is None:
                continue
            at = len(labels) + i
            ax.errorbar([at], [value], yerr=_yerr(value, interval), fmt="s", color="#d62728", capsize=3,
                        label="pooled out-of-fold" if i == 0 else None)  # fmt: skip
        own = result.ensemble["ensemble"] if result.ensemble and result.kind != "cv" else None
        if own is not None and own["metrics"].get(name) is not None:  # same split as the members: the test split
            value, interval = own["metrics"][name], own.get("intervals", {}).get(name)
            ax.errorbar([len(labels)], [value], yerr=_yerr(value, interval), fmt="D", color="#2ca02c", capsize=3,
                        label=f"ensemble ({result.ensemble['confidence']:.0%} CI)")  # fmt: skip
        ticks = labels + [f"pooled s{p['seed']}" for p in result.pooled] + (["ensemble"] if own is not None else [])
        ax.set_xticks(range(len(ticks)), ticks, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric_label(name), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{'cross-validation' if result.kind == 'cv' else 'repeated seeds'}: "
                 f"{'out-of-fold' if result.kind == 'cv' else 'test'} metrics per member", fontsize=10)  # fmt: skip
    return save_figure(fig, path)
