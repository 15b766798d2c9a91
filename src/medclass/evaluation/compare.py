"""Evaluate every run under a folder and compare them: a table (CSV + Markdown) and a chart with intervals,
naming the best run per dataset by a chosen metric. A run that cannot be evaluated is listed with its reason and
the others go on."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medclass.errors import UserError
from medclass.evaluation.bootstrap import bootstrap_intervals
from medclass.evaluation.evaluate import evaluate_run, split_scores
from medclass.io import atomic_write_text, save_figure
from medclass.metrics import METRICS, Scores, check_metric, metric_label
from medclass.run_dir import RunDir
from medclass.wording import interval_text

log = logging.getLogger("medclass")


@dataclass
class PairedDifference:
    """Run A minus run B in one metric on the same images, with a paired bootstrap interval (both runs' scores of a
    resample come from the same images, so what the images share cancels out)."""

    metric: str
    difference: float
    low: float
    high: float
    n_images: int

    @property
    def separated(self) -> bool:
        """The interval excludes 0: A and B differ beyond what resampling the images gives."""
        return self.low > 0 or self.high < 0


def paired_difference(
    run_a: str | Path, run_b: str | Path, metric: str, split: str = "val", resamples: int = 1000, seed: int = 0
) -> PairedDifference | None:
    """None when the metric is not computed from scores (the loss) or the runs did not score the same images."""
    compute = METRICS[metric].compute
    if compute is None:
        return None
    targets, scores_a, task = split_scores(run_a, split)
    targets_b, scores_b, _ = split_scores(run_b, split)
    if not np.array_equal(targets, targets_b) or scores_a.shape != scores_b.shape:
        return None
    width = scores_a.shape[1]

    def difference(y_true: np.ndarray, both: np.ndarray) -> dict[str, float]:
        a, b = compute(Scores(y_true, both[:, :width], task)), compute(Scores(y_true, both[:, width:], task))
        return {"difference": np.nan if a is None or b is None else a - b}

    if np.array_equal(scores_a, scores_b):  # the same scores: no difference on any resample, exactly
        return PairedDifference(metric, 0.0, 0.0, 0.0, len(targets))
    both = np.concatenate([scores_a, scores_b], axis=1)
    point = difference(targets, both)["difference"]
    bounds = bootstrap_intervals(targets, both, difference, ["difference"], resamples, seed=seed).bounds
    if "difference" not in bounds or not np.isfinite(point):
        return None
    low, high = bounds["difference"]
    return PairedDifference(metric, float(point), float(low), float(high), len(targets))


@dataclass
class ComparedRun:
    run_dir: Path
    status: str
    experiment: str = ""
    dataset: str = ""
    model: str = ""
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why its interval is undefined
    error: str = ""
    subgroups: list[dict[str, Any]] = field(default_factory=list)  # metrics.json's subgroup results, when asked

    def subgroup_gap(self, metric: str) -> dict[str, Any] | None:
        """The largest gap in ``metric`` between the subgroups of any attribute: {attribute, gap, lowest, highest}."""
        gaps = [{"attribute": entry["name"], **entry["gaps"][metric]} for entry in self.subgroups
                if metric in entry.get("gaps", {})]  # fmt: skip
        return max(gaps, key=lambda gap: gap["gap"], default=None)


@dataclass
class Comparison:
    rows: list[ComparedRun]
    metric: str
    best: dict[str, ComparedRun]  # per dataset
    files: dict[str, Path]


def _sort_key(metric: str):
    """Evaluated runs first, by dataset, best first; then the failures."""
    sign = -1.0 if METRICS[metric].higher_is_better else 1.0

    def key(row: ComparedRun) -> tuple[bool, str, float]:
        value = row.metrics.get(metric, float("nan"))
        unranked = row.status != "ok" or not np.isfinite(value)
        return unranked, row.dataset, 0.0 if unranked else sign * value

    return key


def compare_runs(
    folder: str | Path,
    metric: str = "auc",
    checkpoint: str = "best",
    split: str = "test",
    settings: dict[str, Any] | None = None,
) -> Comparison:
    """Evaluate each run under ``folder`` (its own evaluation settings, updated with ``settings``) and write
    comparison.csv, comparison.md and comparison.png into ``folder``."""
    folder = Path(folder)
    check_metric(metric)
    runs = RunDir.find(folder)
    if not runs:
        raise UserError(f"{folder} holds no run directories (folders with config.yaml and run.json)")
    rows = []
    for run_dir in runs:
        name = run_dir.relative_to(folder) if run_dir != folder else Path(run_dir.name)
        log.info("evaluating %s", name)
        try:
            config = RunDir.open(run_dir).load_config()
            result = evaluate_run(run_dir, checkpoint, split, overrides=settings)
        except UserError as exc:
            log.warning("%s: %s", name, exc)
            rows.append(ComparedRun(name, "failed", error=str(exc)))
            continue
        rows.append(
            ComparedRun(
                name,
                "ok",
                experiment=config.experiment,
                dataset=str(result.extra.get("dataset", "")),
                model=config.model.name,
                epoch=result.epoch,
                metrics=result.metrics,
                intervals=result.intervals,
                undefined=result.undefined_intervals,
                subgroups=result.extra.get("subgroups") or [],
            )  # fmt: skip
        )
    rows.sort(key=_sort_key(metric))
    best: dict[str, ComparedRun] = {}
    for row in rows:
        if row.status == "ok" and metric in row.metrics and np.isfinite(row.metrics[metric]):
            best.setdefault(row.dataset, row)
    files = write_comparison(folder, rows, metric, best, split)
    return Comparison(rows, metric, best, files)


def _cell(row: ComparedRun, name: str) -> str:
    return f"{row.metrics[name]:.4f}" if name in row.metrics else ""


def gap_cells(row: ComparedRun, metric: str) -> tuple[str, str]:
    """(the subgroup with the lowest ``metric`` and its value, the largest gap) for a table; empty without
    subgroups."""
    gap = row.subgroup_gap(metric)
    if gap is None:
        return "", ""
    lowest = gap["lowest"]
    return f"{gap['attribute']}={lowest['subgroup']} {lowest['value']:.4f} (n={lowest['n']})", f"{gap['gap']:.4f}"


def write_comparison(
    folder: Path, rows: list[ComparedRun], metric: str, best: dict[str, ComparedRun], split: str
) -> dict[str, Path]:
    columns = list(dict.fromkeys([metric, *METRICS.names("compare")]))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    with_subgroups = any(row.subgroups for row in rows)
    gap_columns = [f"{metric}_lowest_subgroup", f"{metric}_subgroup_gap"] if with_subgroups else []
    writer.writerow(["run", "status", "experiment", "dataset", "model", "epoch", *columns,
                     f"{metric}_low", f"{metric}_high", *gap_columns, "best", "error"])  # fmt: skip
    for row in rows:
        low, high = row.intervals.get(metric, ("", ""))
        is_best = best.get(row.dataset) is row
        gaps = list(gap_cells(row, metric)) if with_subgroups else []
        writer.writerow([row.run_dir, row.status, row.experiment, row.dataset, row.model, row.epoch or "",
                         *(_cell(row, c) for c in columns), low, high, *gaps, is_best, row.error])  # fmt: skip
    files = {"csv": atomic_write_text(folder / "comparison.csv", buffer.getvalue())}

    direction = "higher is better" if METRICS[metric].higher_is_better else "lower is better"
    lines = [f"# Comparison of {len(rows)} runs ({split} split, by {metric}, {direction})", ""]
    lines += [f"**Best on {dataset}: {row.run_dir}** ({row.model}, {metric} {row.metrics[metric]:.4f})"
              for dataset, row in best.items()]  # fmt: skip
    header = ["run", "dataset", "model", *columns, f"{metric} 95% CI"]
    header += [f"lowest subgroup ({metric})", "largest subgroup gap"] if with_subgroups else []
    lines += ["", "| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
    for row in rows:
        if row.status != "ok":
            continue
        ci = interval_text(row.intervals.get(metric), 4, dash=" - ", computed=metric in row.undefined)
        mark = " (best)" if best.get(row.dataset) is row else ""
        gaps = "".join(f" | {cell}" for cell in gap_cells(row, metric)) if with_subgroups else ""
        lines.append(f"| {row.run_dir}{mark} | {row.dataset} | {row.model} | "
                     + " | ".join(_cell(row, c) for c in columns) + f" | {ci}{gaps} |")  # fmt: skip
    failed = [row for row in rows if row.status != "ok"]
    if failed:
        lines += ["", "## Not evaluated", *(f"- {row.run_dir}: {row.error}" for row in failed)]
    files["markdown"] = atomic_write_text(folder / "comparison.md", "\n".join(lines) + "\n")
    files["chart"] = plot_comparison(folder / "comparison.png", rows, metric, best)
    return files


def plot_comparison(path: Path, rows: list[ComparedRun], metric: str, best: dict[str, ComparedRun]) -> Path:
    """One panel per dataset, each with its own axis: a metric on one dataset is not comparable with the same
    metric on another, so they never share an axis."""
    ok = [row for row in rows if row.status == "ok" and metric in row.metrics]
    datasets = list(dict.fromkeys(row.dataset for row in ok)) or [""]
    heights = [max(1, sum(row.dataset == d for row in ok)) for d in datasets]
    fig = Figure(figsize=(10, 0.9 * len(datasets) + 0.5 * sum(heights) + 0.4), layout="constrained")
    grid = fig.add_gridspec(len(datasets), 1, height_ratios=heights)
    for k, dataset in enumerate(datasets):
        ax = fig.add_subplot(grid[k])
        shown = [row for row in ok if row.dataset == dataset]
        # Points with their intervals rather than bars: the differences that matter are small next to the metric's
        # range, and a bar axis starting at 0 would hide them.
        for y, row in enumerate(shown):
            value = row.metrics[metric]
            color = "tab:green" if best.get(row.dataset) is row else "tab:blue"
            if metric in row.intervals:
                low, high = row.intervals[metric]
                ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color=color, capsize=4)
            else:  # hollow, no bar: a point without an interval is not a precise value
                ax.plot(value, y, "o", mfc="none", color=color)
            undefined = " (interval undefined)" if metric in row.undefined else ""
            ax.annotate(f"{value:.4f}{undefined}", (value, y), textcoords="offset points", xytext=(0, 7),
                        ha="center", fontsize=8)  # fmt: skip
        ax.set_yticks(range(len(shown)), [f"{row.run_dir} ({row.model})" for row in shown], fontsize=8)
        ax.set_ylim(len(shown) - 0.5, -0.7)
        ax.margins(x=0.15)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(dataset, fontsize=10, loc="left")
        ax.set_xlabel(f"{metric_label(metric)} with its 95% interval (green: the best run on {dataset})",
                      fontsize=8)  # fmt: skip
    fig.suptitle(f"Runs compared by {metric_label(metric)} on their held-out split, one panel per dataset")
    return save_figure(fig, path)
