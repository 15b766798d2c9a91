"""The per-run report: plots (PNG), a self-contained HTML page (plots embedded, no network needed) and a Markdown
summary, written to the run's report/ folder."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np

from medclass.config import EvaluationConfig, ExperimentConfig
from medclass.evaluation.calibration import reliability_curve
from medclass.evaluation.clinical import METRIC_DEFINITIONS, PER_CLASS_COLUMNS
from medclass.evaluation.plots import (
    plot_confusion,
    plot_reliability,
    plot_roc_pr,
    plot_training_curves,
    plot_worst_images,
    read_epochs,
)
from medclass.io import atomic_write_text
from medclass.run_dir import RunDir

if TYPE_CHECKING:
    from medclass.data.dataset import LabelledImages
    from medclass.evaluation.evaluate import EvaluationResult

METRIC_LABELS = {
    "acc": "ACC", "balanced_acc": "balanced ACC", "auc": "AUC (MedMNIST)", "auc_macro_ovr": "AUC macro OvR",
    "auc_weighted_ovr": "AUC weighted OvR", "top3_acc": "top-3 ACC", "top5_acc": "top-5 ACC", "f1_macro": "F1 macro",
    "f1_weighted": "F1 weighted", "kappa": "Cohen's kappa", "mcc": "MCC", "ece": "ECE", "brier": "Brier score",
}  # fmt: skip
PLOT_TITLES = {
    "confusion_counts": "Confusion matrix (counts)",
    "confusion_normalized": "Confusion matrix (row-normalised)",
    "roc_pr": "ROC and precision-recall curves",
    "reliability": "Reliability diagram",
    "training_curves": "Training curves",
    "worst_images": "Worst-classified images",
}


def worst_images(
    dataset: LabelledImages, split: str, targets: np.ndarray, scores: np.ndarray, limit: int
) -> tuple[list[np.ndarray], list[str]]:
    """The misclassified images the model was surest about (lowest probability of the true class), or for
    multi-label tasks the images with the highest binary cross-entropy."""
    if limit == 0:
        return [], []
    classes = dataset.classes
    if dataset.task == "multilabel":
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        loss = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=1)
        order = np.argsort(-loss)[:limit]
        captions = []
        for i in order:
            true = ",".join(c[:10] for c, t in zip(classes, targets[i], strict=True) if t) or "none"
            predicted = ",".join(c[:10] for c, s in zip(classes, scores[i], strict=True) if s > 0.5) or "none"
            captions.append(f"#{i}\ntrue {true}\npred {predicted}")
    else:
        truth = targets.reshape(-1)
        p_true = scores[np.arange(len(truth)), truth]
        wrong = np.flatnonzero(scores.argmax(axis=1) != truth)
        order = wrong[np.argsort(p_true[wrong])][:limit]
        captions = [
            f"#{i}\ntrue {classes[truth[i]][:14]}\npred {classes[scores[i].argmax()][:14]} ({scores[i].max():.2f})"
            for i in order
        ]
    files = dataset.splits[split].files
    if files is not None:
        captions = [f"{caption}\n{Path(files[i]).name[:22]}" for caption, i in zip(captions, order, strict=True)]
    images = [dataset.splits[split].image(int(i)) for i in order]
    return images, captions


def write_plots(
    folder: Path, run: RunDir, config: ExperimentConfig, dataset: LabelledImages, result: EvaluationResult,
    targets: np.ndarray, scores: np.ndarray, scaled: np.ndarray, y_pred: np.ndarray, settings: EvaluationConfig,
) -> dict[str, Path]:  # fmt: skip
    task, classes, bins = result.task, dataset.classes, settings.calibration_bins
    plots = {
        name: plot_confusion(folder / f"{name}.png", targets, y_pred, classes, task, normalize)
        for name, normalize in (("confusion_counts", False), ("confusion_normalized", True))
    }
    positive = (result.extra.get("positive_class") or {}).get("index")
    plots["roc_pr"] = plot_roc_pr(folder / "roc_pr.png", targets, scores, classes, task, positive)
    calibration = result.calibration
    plots["reliability"] = plot_reliability(
        folder / "reliability.png", reliability_curve(targets, scores, task, bins), calibration["ece"],
        reliability_curve(targets, scaled, task, bins), calibration["ece_scaled"], calibration["fitted_temperature"],
    )  # fmt: skip
    curves = plot_training_curves(
        folder / "training_curves.png", read_epochs(run.epochs_csv), config.checkpoint.monitor
    )
    if curves is not None:
        plots["training_curves"] = curves
    images, captions = worst_images(dataset, result.split, targets, scores, settings.worst_images)
    title = f"worst-classified {result.split} images (true class least probable)"
    worst = plot_worst_images(folder / "worst_images.png", images, captions, title)
    if worst is not None:
        plots["worst_images"] = worst
    return plots


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_context(
    run: RunDir, config: ExperimentConfig, result: EvaluationResult, plots: dict[str, Path]
) -> dict[str, Any]:
    status = run.read_json("run.json") if run.file("run.json").is_file() else {}
    data = run.read_json("data.json") if run.file("data.json").is_file() else {}
    environment = run.read_json("environment.json") if run.file("environment.json").is_file() else {}
    metric_rows = []
    for name, value in result.metrics.items():
        interval = result.intervals.get(name)
        metric_rows.append({
            "name": METRIC_LABELS.get(name, name), "key": name, "value": _fmt(value),
            "interval": f"{_fmt(interval[0])} – {_fmt(interval[1])}" if interval else "",
            "definition": METRIC_DEFINITIONS.get(name, ""),
        })  # fmt: skip
    per_class = [
        {c: _with_interval(row[c], (row.get("ci") or {}).get(c)) for c in PER_CLASS_COLUMNS} for row in result.per_class
    ]
    positive = result.extra.get("positive_class")
    positive_rows = []
    if positive:
        ci = positive.get("ci") or {}
        labels = {"sensitivity": "sensitivity (recall)", "specificity": "specificity", "ppv": "PPV (precision)",
                  "npv": "NPV", "f1": "F1", "auc": "ROC AUC", "ap": "average precision (PR AUC)"}  # fmt: skip
        positive_rows = [
            {"name": label, "value": _fmt(positive.get(key)),
             "interval": f"{_fmt(ci[key][0])} – {_fmt(ci[key][1])}" if ci.get(key) else ""}
            for key, label in labels.items()
        ]  # fmt: skip
    fitted = ["the temperature"]
    if result.operating_point:
        fitted.append("the operating threshold")
    if result.extra.get("thresholds"):
        fitted.append("the per-label thresholds")
    fitted_on_val = (", ".join(fitted[:-1]) + " and " + fitted[-1] + " were") if len(fitted) > 1 else fitted[0] + " was"
    return {
        "title": f"{config.experiment}: {config.model.name} on {result.extra.get('dataset', '')}",
        "run_dir": str(run.path),
        "result": result,
        "status": status,
        "metric_rows": metric_rows,
        "fitted_on_val": fitted_on_val + " fitted",
        "confidence_pct": round(100 * result.extra.get("bootstrap", {}).get("confidence", 0.95)),
        "resamples": result.extra.get("bootstrap", {}).get("resamples", 0),
        "per_class_columns": PER_CLASS_COLUMNS,
        "per_class": per_class,
        "positive": positive,
        "positive_rows": positive_rows,
        "warnings": result.extra.get("warnings", []),
        "calibration": {k: _fmt(v) if isinstance(v, float) else v for k, v in result.calibration.items()},
        "operating_point": result.operating_point,
        "fmt": _fmt,
        "plots": {name: (PLOT_TITLES[name], path) for name, path in plots.items()},
        "data": data,
        "environment": environment,
        "config_yaml": run.config_path.read_text(encoding="utf-8"),
    }


def _with_interval(value: Any, interval: list[float] | None) -> dict[str, str]:
    """A per-class cell: the value and, when there is one, its interval (shown under it in the HTML)."""
    return {
        "value": _fmt(value, 3),
        "interval": f"{interval[0]:.3f}–{interval[1]:.3f}" if isinstance(value, float) and interval else "",
    }


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medclass.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["embed"] = _embed
    return env


def write_report(
    folder: Path, run: RunDir, config: ExperimentConfig, dataset: LabelledImages, result: EvaluationResult,
    targets: np.ndarray, scores: np.ndarray, scaled: np.ndarray, y_pred: np.ndarray, settings: EvaluationConfig,
) -> dict[str, Path]:  # fmt: skip
    """Plots, report.html and summary.md in ``folder``; ``scaled`` are the temperature-scaled scores."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = write_plots(folder, run, config, dataset, result, targets, scores, scaled, y_pred, settings)
    context = report_context(run, config, result, plots)
    env = _environment()
    files = dict(plots)
    files["html"] = atomic_write_text(folder / "report.html", env.get_template("report.html.j2").render(**context))
    files["markdown"] = atomic_write_text(folder / "summary.md", env.get_template("summary.md.j2").render(**context))
    return files
