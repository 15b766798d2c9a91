"""Robustness to image degradation: a run's checkpoint evaluated on its test split under every corruption at five
severities (medclass.data.corruptions), next to the clean result; a table per metric and a plot of metric against
severity, written to ``<run>/robustness/``.

Nothing here is tuned: the same checkpoint and decision rule as the clean evaluation, applied to degraded copies
of the held-out images (seeded, so the table can be regenerated exactly)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from medclass.config.data import check_split
from medclass.data import LabelledImages, load_dataset
from medclass.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from medclass.data.dataset import ArrayDataset, ImageSplit
from medclass.errors import UserError
from medclass.io import atomic_write_text, save_figure
from medclass.metrics import METRICS, headline_metrics, metric_label, predicted_labels
from medclass.run_dir import RunDir
from medclass.tasks import scores_from_logits
from medclass.training.predict import predict_logits
from medclass.training.restore import load_module
from medclass.wording import class_name

COLLAPSE_SHARE = 0.95  # a model that gives one class to this share of the images (well above its true share) ...
COLLAPSE_EXCESS = 0.10  # ... answers the same whatever the image: the corruption has collapsed it


@dataclass
class RobustnessResult:
    run_dir: Path
    split: str
    clean: dict[str, float]
    rows: list[dict] = field(default_factory=list)  # {"corruption", "severity", metric: value, ...}
    files: dict[str, Path] = field(default_factory=dict)

    def value(self, corruption: str, severity: int, metric: str) -> float:
        return next(r[metric] for r in self.rows if r["corruption"] == corruption and r["severity"] == severity)

    def row(self, corruption: str, severity: int) -> dict:
        return next(r for r in self.rows if r["corruption"] == corruption and r["severity"] == severity)

    def collapsed(self) -> list[dict]:
        return [r for r in self.rows if r["collapsed"]]

    def mean_at(self, severity: int, metric: str) -> float:
        return float(np.mean([r[metric] for r in self.rows if r["severity"] == severity]))


def evaluate_corruptions(
    run_dir: str | Path,
    corruptions: list[str] | None = None,
    severities: tuple[int, ...] = SEVERITIES,
    checkpoint: str = "best",
    split: str = "test",
    dataset: LabelledImages | None = None,
) -> RobustnessResult:
    for severity in severities:
        if severity not in SEVERITIES:
            raise UserError(f"--severities: {severity} is not a severity; use values from 1 to {max(SEVERITIES)}")
    names = corruptions or sorted(CORRUPTIONS)
    run = RunDir.open(run_dir)
    run.check_format()
    config = run.load_config()
    dataset = dataset or load_dataset(config.data)
    check_split(split, dataset.splits)
    module, _ = load_module(config, dataset.task, dataset.classes, run.existing_checkpoint(checkpoint))
    data = dataset.splits[split]
    images, labels = data.array(), np.asarray(data.labels)
    batch_size = config.data.eval_batch_size or 256

    def metrics_of(batch_images: np.ndarray) -> dict:
        loader = DataLoader(ArrayDataset(ImageSplit(batch_images, labels)), batch_size=batch_size)
        logits, targets = predict_logits(module, loader, config.trainer)
        scores = scores_from_logits(torch.from_numpy(logits), dataset.task).numpy()
        return {**headline_metrics(targets, scores, dataset.task), **_collapse(targets, scores, dataset)}

    result = RobustnessResult(run.path, split, metrics_of(images))
    for name in names:
        for severity in severities:
            degraded = corrupt(images, name, severity, seed=config.seed)
            result.rows.append({"corruption": name, "severity": severity, **metrics_of(degraded)})
    out = run.robustness_dir(split, checkpoint)
    out.mkdir(exist_ok=True)
    result.files = {
        "csv": _write_csv(result, out / "robustness.csv"),
        "markdown": atomic_write_text(out / "robustness.md", robustness_markdown(result, severities, config.seed)),
        "plot": save_figure(_plot(result, severities), out / "robustness.png"),
    }
    return result


def _collapse(targets: np.ndarray, scores: np.ndarray, dataset: LabelledImages) -> dict:
    """The most predicted class and its share of the images, and whether the model has collapsed to it."""
    if dataset.task == "multilabel":
        return {"top_class": "", "top_share": float("nan"), "collapsed": False}
    predicted = predicted_labels(scores, dataset.task)
    counts = np.bincount(predicted, minlength=len(dataset.classes))
    top = int(counts.argmax())
    share = float(counts[top] / len(predicted))
    true_share = float(np.mean(np.asarray(targets).reshape(-1) == top))
    collapsed = share >= COLLAPSE_SHARE and share - true_share >= COLLAPSE_EXCESS
    return {"top_class": dataset.classes[top], "top_share": share, "collapsed": collapsed}


def _name(result: RobustnessResult) -> str:
    return f"{result.run_dir.parent.name}/{result.run_dir.name}"  # experiment/timestamp


def _write_csv(result: RobustnessResult, path: Path) -> Path:
    buffer = io.StringIO()
    fields = ["corruption", "severity", *METRICS.names("headline"), "top_class", "top_share", "collapsed"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerow({"corruption": "clean", "severity": 0, **result.clean})
    for row in result.rows:
        writer.writerow(row)
    return atomic_write_text(path, buffer.getvalue())


def robustness_markdown(result: RobustnessResult, severities: tuple[int, ...], seed: int) -> str:
    names = list(dict.fromkeys(r["corruption"] for r in result.rows))
    lines = [f"# Robustness of {_name(result)} on the {result.split} split", "",
             f"{len(names)} corruptions x {len(severities)} severities, corruption seed {seed}; severity 0 is the "
             "clean image.", ""]  # fmt: skip
    collapsed = result.collapsed()
    if result.clean["collapsed"]:
        lines += [f"**Even on clean images the model predicts “{class_name(result.clean['top_class'])}” for "
                  f"{result.clean['top_share']:.0%} of them** (balanced ACC {result.clean['balanced_acc']:.3f}): "
                  "it has not learnt to tell the classes apart, so the rows below say little.", ""]  # fmt: skip
    if collapsed:
        lines += ["## Collapse", "",
                  f"**{len(collapsed)} corruption/severity pair(s) make the model give one class to nearly every "
                  f"image** (at least {COLLAPSE_SHARE:.0%} of them, well above that class's true share): ACC and "
                  "AUC can still look fair there, balanced ACC shows it.", ""]  # fmt: skip
        lines += [
            f"- {r['corruption']} s{r['severity']}: {r['top_share']:.0%} predicted “{class_name(r['top_class'])}”, "
            f"balanced ACC {r['balanced_acc']:.3f}"
            for r in collapsed
        ]
        lines.append("")
    for metric in METRICS.names("headline"):
        header = ["corruption", "clean", *(f"s{s}" for s in severities), f"drop at s{severities[-1]}"]
        lines += [f"## {metric_label(metric)}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for name in [*names, "mean"]:
            values = [result.mean_at(s, metric) if name == "mean" else result.value(name, s, metric)
                      for s in severities]  # fmt: skip
            marks = ["" if name == "mean" or not result.row(name, s)["collapsed"] else " †" for s in severities]
            cells = [f"**{name}**" if name == "mean" else name, f"{result.clean[metric]:.4f}",
                     *(f"{v:.4f}{m}" for v, m in zip(values, marks, strict=True)),
                     f"{values[-1] - result.clean[metric]:+.4f}"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if collapsed:
        lines += ["† collapsed: one class predicted for nearly every image.", ""]
    return "\n".join(lines)


def _plot(result: RobustnessResult, severities: tuple[int, ...]) -> Figure:
    names = list(dict.fromkeys(r["corruption"] for r in result.rows))
    metrics = METRICS.names("headline")
    fig = Figure(figsize=(5.5 * len(metrics), 4.4), layout="constrained")
    axes = fig.subplots(1, len(metrics))
    x = [0, *severities]
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        for name in names:
            ax.plot(x, [result.clean[metric], *(result.value(name, s, metric) for s in severities)], marker="o",
                    markersize=3, linewidth=1, label=name.replace("_", " "))  # fmt: skip
        mean = [result.clean[metric], *(result.mean_at(s, metric) for s in severities)]
        ax.plot(x, mean, color="black", linewidth=2.5, label="mean")
        collapsed = result.collapsed()
        if collapsed:
            ax.scatter([r["severity"] for r in collapsed], [r[metric] for r in collapsed], marker="x", s=60,
                       color="red", zorder=5, label="collapsed to one class")  # fmt: skip
        ax.set_xticks(x, ["clean", *(str(s) for s in severities)])
        ax.set_xlabel("corruption severity (1: mild, 5: severe)")
        ax.set_ylabel(f"{result.split} {metric_label(metric)}")
        label = metric_label(metric)
        ax.set_title(f"{label[0].upper()}{label[1:]} under each corruption")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Robustness of {_name(result)}: {result.split} metrics under image corruptions")
    return fig
