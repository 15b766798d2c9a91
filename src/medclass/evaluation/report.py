"""The per-run report: plots (PNG), a self-contained HTML page (plots embedded, no network needed) and a Markdown
summary, written to the run's report/ folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from medclass.config import EvaluationConfig, ExperimentConfig
from medclass.data.checks import label_names
from medclass.data.dataset import LabelledImages
from medclass.evaluation.calibration import reliability_curve
from medclass.evaluation.clinical import INTERVAL_COLUMNS, PER_CLASS_COLUMNS
from medclass.evaluation.external import render_section
from medclass.evaluation.plots import (
    copy_caption,
    plot_confusion,
    plot_copies,
    plot_reliability,
    plot_roc_pr,
    plot_subgroups,
    plot_training_curves,
    plot_worst_images,
    read_epochs,
)
from medclass.evaluation.result import EvaluationResult
from medclass.evaluation.subgroups import SMALL, gap_sentence
from medclass.io import atomic_write_text, png_data_uri, read_json
from medclass.metrics import decide_positive, metric_definitions, metric_label
from medclass.run_dir import ExternalDir, RunDir
from medclass.wording import (
    PER_CLASS_LABELS,
    class_name,
    count,
    duration,
    interval_text,
    limited_epochs,
    listing,
    number,
    percent,
    plural,
    short_file,
    when,
    wrap_class,
)

PLOT_TITLES = {
    "training_curves": "Training curves: loss and validation metrics per epoch, the best epoch marked",
    "roc_pr": "ROC and precision-recall curves",
    "confusion_counts": "Confusion matrix (image counts)",
    "confusion_normalized": "Confusion matrix, row-normalised (each row: share of that true class)",
    "confusion_operating": "Confusion matrix at the operating threshold chosen on validation (image counts)",
    "reliability": "Reliability diagram: are the probabilities right?",
    "worst_images": "The misclassified images the model was surest about",
    "subgroups": "Results by subgroup, with intervals (forest plot)",
    "copies": "Copies across splits: identical (=) and near-duplicate (≈) images in more than one split",
}
COPY_GROUPS = 8  # groups of copies shown as thumbnails


def copy_thumbnails(
    dataset: LabelledImages, limit: int = COPY_GROUPS
) -> tuple[list[list[tuple[np.ndarray, str]]], int]:
    """The groups of identical and near-duplicate images that sit in more than one split, as thumbnails with
    captions (group number and kind, split, the whole file name wrapped, label), at most ``limit`` groups; and how
    many groups there are in all."""
    identical = dataset.identical
    if identical is None:
        return [], 0
    marked = [("=", g) for g in identical.cross_split] + [("≈", g) for g in identical.near_cross_split]
    shown = []
    for number_, (sign, members) in enumerate(marked[:limit], start=1):
        group = []
        for member in members:
            found = dataset.locate(member)
            if found is None:
                continue
            split, index = found
            label = label_names(dataset.splits[split].labels[index : index + 1], dataset.classes)[0]
            caption = copy_caption(number_, sign, split, member.partition(":")[2], label)
            group.append((dataset.splits[split].image(index), caption))
        if len(group) > 1:
            shown.append(group)
    return shown, len(marked)


def worst_images(
    dataset: LabelledImages, split: str, targets: np.ndarray, scores: np.ndarray, limit: int
) -> tuple[list[np.ndarray], list[str]]:
    """The misclassified images the model was surest about (lowest probability of the true class), or for
    multi-label tasks the images with the highest binary cross-entropy. Captions name the true and the predicted
    class on lines of their own (class names contain commas: "normal, benign"), wrapped, never cut."""
    if limit == 0:
        return [], []
    classes = dataset.classes
    if dataset.task == "multilabel":
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        loss = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=1)
        order = np.argsort(-loss)[:limit]
        captions = []
        for i in order:
            true = "; ".join(c for c, t in zip(classes, targets[i], strict=True) if t) or "none"
            predicted = "; ".join(c for c, s in zip(classes, scores[i], strict=True) if s > 0.5) or "none"
            captions.append(f"image {i}\ntrue: {wrap_class(true)}\npredicted: {wrap_class(predicted)}")
    else:
        truth = targets.reshape(-1)
        p_true = scores[np.arange(len(truth)), truth]
        wrong = np.flatnonzero(scores.argmax(axis=1) != truth)
        order = wrong[np.argsort(p_true[wrong])][:limit]
        captions = [
            f"image {i}\ntrue: {wrap_class(classes[truth[i]])}\n"
            f"predicted: {wrap_class(classes[scores[i].argmax()])} (P = {scores[i].max():.2f})"
            for i in order
        ]
    files = dataset.splits[split].files
    if files is not None:
        captions = [f"{caption}\n{short_file(Path(files[i]).name)}" for caption, i in zip(captions, order, strict=True)]
    images = [dataset.splits[split].image(int(i)) for i in order]
    return images, captions


def loss_name(config: ExperimentConfig, task: str) -> str:
    """What the loss curves measure, in words (the y axis of the loss panel)."""
    if task == "multilabel":
        return "binary cross-entropy (mean over labels)"
    if task == "ordinal" and config.loss.ordinal == "sord":
        return "cross-entropy with soft ordinal targets"
    smoothing = config.loss.label_smoothing
    return "cross-entropy" + (f" (label smoothing {smoothing:g})" if smoothing else "")


def write_plots(
    folder: Path, run: RunDir, config: ExperimentConfig, dataset: LabelledImages, result: EvaluationResult,
    targets: np.ndarray, scores: np.ndarray, scaled: np.ndarray, y_pred: np.ndarray, settings: EvaluationConfig,
) -> dict[str, Path]:  # fmt: skip
    task, classes, bins, split = result.task, dataset.classes, settings.calibration_bins, result.split
    plots: dict[str, Path] = {}
    status = run.read_status()
    curves = plot_training_curves(
        folder / "training_curves.png", read_epochs(run.epochs_csv), config.checkpoint.monitor,
        best_epoch=result.epoch if result.checkpoint == "best" else status.get("best_epoch"),
        loss_name=loss_name(config, task),
    )  # fmt: skip
    if curves is not None:
        plots["training_curves"] = curves
    positive = (result.extra.get("positive_class") or {}).get("index")
    plots["roc_pr"] = plot_roc_pr(
        folder / "roc_pr.png", targets, scores, classes, task, positive, result.operating_point, split
    )
    op = result.operating_point
    at_half = f" at P({class_name(classes[op['positive_index']])}) > 0.5" if op else ""
    for name, normalize in (("confusion_counts", False), ("confusion_normalized", True)):
        title = (f"Confusion matrix{at_half}, row-normalised (each row: share of that true class)" if normalize
                 else f"Confusion matrix{at_half} (image counts)")  # fmt: skip
        plots[name] = plot_confusion(folder / f"{name}.png", targets, y_pred, classes, task, normalize, title=title)
        if op and not normalize:  # the decisions the model will really make, beside those at 0.5
            k = op["positive_index"]
            at_op = np.where(decide_positive(scores[:, k], op["threshold"]), k, 1 - k)
            title = (f"Confusion matrix at the operating threshold P({class_name(classes[k])}) > "
                     f"{op['threshold']:.2f} (image counts)")  # fmt: skip
            plots["confusion_operating"] = plot_confusion(
                folder / "confusion_operating.png", targets, at_op, classes, task, False, title=title
            )
    calibration = result.calibration
    plots["reliability"] = plot_reliability(
        folder / "reliability.png", reliability_curve(targets, scores, task, bins), calibration["ece"],
        reliability_curve(targets, scaled, task, bins), calibration["ece_scaled"], calibration["fitted_temperature"],
        split,
    )  # fmt: skip
    images, captions = worst_images(dataset, split, targets, scores, settings.worst_images)
    title = f"Misclassified {split} images the model was surest about (lowest probability of the true class)"
    worst = plot_worst_images(folder / "worst_images.png", images, captions, title)
    if worst is not None:
        plots["worst_images"] = worst
    groups, total = copy_thumbnails(dataset)
    title = (f"{plural(total, 'group')} of copies across splits"
             + (f", the first {len(groups)} shown" if len(groups) < total else ""))  # fmt: skip
    copies = plot_copies(folder / "copies.png", groups, title)
    if copies is not None:
        plots["copies"] = copies
    pct = round(100 * settings.confidence)
    subgroups = plot_subgroups(folder / "subgroups.png", result.extra.get("subgroups") or [], result.metrics, pct)
    if subgroups is not None:
        plots["subgroups"] = subgroups
    return plots


def _interval(ci: dict[str, Any], key: str, value: Any, digits: int = 3, scale: float = 1.0) -> str:
    """The interval of ``key`` from a ``ci`` mapping (per-class or positive-class), "undefined" where it has none
    although the value exists."""
    return interval_text(ci.get(key), digits, scale, computed=bool(ci) and value is not None)


def question(task: str, classes: list[str], positive: str | None) -> str:
    """The clinical question the model answers, in one sentence."""
    classes = [class_name(c) for c in classes]
    if task == "binary" and positive:
        others = [c for c in classes if c != positive]
        return f"Does the image show {positive} (rather than {listing(others)})?"
    if task == "multilabel":
        return f"Which of {len(classes)} findings ({listing(classes)}) does the image show? Any number can apply."
    if task == "ordinal":
        return f"Which of {len(classes)} ordered grades ({' < '.join(classes)}) does the image show?"
    return f"Which of {len(classes)} classes ({listing(classes)}) does the image show?"


def _data_sentence(data: dict[str, Any], result: EvaluationResult) -> str:
    splits = data.get("splits") or {}
    counts = ", ".join(f"{info.get('n', 0):,} {name}" for name, info in splits.items())
    source = (data.get("source") or {}).get("type", "")
    skipped = f"; {data['skipped']} file(s) skipped (skipped.csv)" if data.get("skipped") else ""
    return (f"{data.get('name', result.extra.get('dataset', ''))} ({source}): {counts} images; split: "
            f"{result.extra.get('split_source')}; training seed {result.extra.get('seed')}{skipped}")  # fmt: skip


def _evaluated_on(result: EvaluationResult, fold: dict[str, Any] | None) -> str:
    """What the numbers were measured on; a cross-validation fold's "test" split is its held-out fold."""
    if result.split != "test":
        return f"the {result.split} split ({result.n_samples:,} images)"
    if fold:
        return (f"the held-out fold {fold.get('index')} of {fold.get('k')}: {result.n_samples:,} train+val images this "
                "fold's model never trained on, chose its epoch by or fitted anything on (the dataset's test split is "
                "not used in cross-validation)")  # fmt: skip
    return (
        f"the test split: {result.n_samples:,} images never used for training, for choosing the epoch or for "
        "fitting anything"
    )


def _model_sentence(config: ExperimentConfig, status: dict[str, Any]) -> str:
    model = config.model
    weights = _weights_words(status.get("weights") or ("pretrained" if model.pretrained else "none"))
    size = f", {count(status['parameters'])} parameters" if status.get("parameters") else ""
    return f"{model.name} ({weights}{size}), {config.data.input_size} px input"


def _weights_words(source: str) -> str:
    """run.json's weights source, short: the package, cache or file name (the full path stays in run.json)."""
    if source.startswith("none"):
        return "trained from scratch"
    if source == "pretrained":  # a run from before the source was recorded
        return source
    if source.startswith("file "):
        return "pretrained weights from " + Path(source.removeprefix("file ")).name
    if source.startswith("folder "):
        return "pretrained weights from the folder " + Path(source.removeprefix("folder ")).name
    return "pretrained weights: " + source.split(" (")[0]


def _training_sentence(config: ExperimentConfig, status: dict[str, Any], result: EvaluationResult) -> str:
    seconds = sum((status.get("epoch_seconds") or {}).values())
    epochs = status.get("epochs", len(status.get("epoch_seconds") or {}))
    planned = config.total_epochs
    stopped = " (stopped early)" if status.get("stopped_early") else ""
    monitor = metric_label(str(status.get("monitor", "val/" + config.checkpoint.monitor)).replace("/", "_"))
    chosen = (f"; evaluated: epoch {result.epoch}, the best by {monitor}" if result.checkpoint == "best"
              else f"; evaluated: the last epoch ({result.epoch})")  # fmt: skip
    took = f" in {duration(seconds)}" if seconds else ""
    limit = config.trainer.limit_train_batches
    short = f"{limited_epochs(limit)} (trainer.limit_train_batches: a shortened training)" if limit else ""
    return f"{epochs} of {plural(planned, 'epoch')}{short}{stopped}{took}{chosen}"


def _positive_sentences(positive: dict[str, Any], operating_point: dict | None, n: int, pct: int) -> list[str]:
    """What the binary numbers mean for a reader: how many of the positives are found, how many others cleared;
    at the operating threshold chosen on validation when there is one (the decisions the model will make)."""
    if operating_point:
        return [_operating_sentence(operating_point, class_name(positive["class"]), pct)]
    support = positive["support"]
    others = n - support
    ci = positive.get("ci") or {}
    name = positive["class"]
    sentences = []
    if positive.get("sensitivity") is not None and positive.get("specificity") is not None:
        found = round(positive["sensitivity"] * support)
        cleared = round(positive["specificity"] * others)
        sentences.append(
            f"At P({name}) > 0.5 the model finds {found} of the {support} images of {name} (sensitivity "
            f"{percent(positive['sensitivity'])}, {pct}% CI {_percent_interval(ci, 'sensitivity', positive)}) and "
            f"correctly clears {cleared} of the {others} others (specificity {percent(positive['specificity'])}, "
            f"{_percent_interval(ci, 'specificity', positive)})."
        )
    return sentences


def _share(value: float | None, bounds: list[float] | None) -> str:
    """``90.5% (78.0 - 96.2%)``; one decimal near 0 or 100% (where whole percents would round an edge away)."""
    if value is None:
        return "undefined (no images)"
    if not bounds:
        return percent(value)
    return f"{percent(value)} ({_percent_bounds(bounds)})"


def _operating_sentence(op: dict[str, Any], name: str, pct: int) -> str:
    c = op["counts"]
    sensitivity, specificity = (
        _share(op["sensitivity"], op["sensitivity_ci"]),
        _share(op["specificity"], op["specificity_ci"]),
    )
    ppv, npv = _share(op["ppv"], op["ppv_ci"]), _share(op["npv"], op["npv_ci"])
    return (
        f"At the operating threshold P({name}) > {op['threshold']:.2f}, chosen on validation, the model finds "
        f"{c['tp']} of the {c['tp'] + c['fn']} images of {name} (sensitivity {sensitivity}) and clears {c['tn']} of "
        f"the {c['tn'] + c['fp']} others (specificity {specificity}); of the {c['tp'] + c['fp']} it calls {name}, "
        f"{c['tp']} are (PPV {ppv}), and of the {c['tn'] + c['fn']} it clears, {c['tn']} are not (NPV {npv}). "
        f"Intervals: {pct}% CI (Wilson)."
    )


def _operating_block(op: dict[str, Any], name: str) -> dict[str, Any]:
    """The operating point's table: each measure as "k of n: value (interval)" at the threshold and at 0.5, the
    four counts, and PPV/NPV at a stated prevalence."""
    half = op["at_0.5"]

    def cell(point: dict[str, Any], key: str, hit: str, total: tuple[str, str]) -> str:
        c = point["counts"]
        n = c[total[0]] + c[total[1]]
        return f"{c[hit]} of {n}: {_share(point[key], point[f'{key}_ci'])}"

    measures = (
        ("sensitivity", f"images of {name} found", "tp", ("tp", "fn")),
        ("specificity", "other images cleared", "tn", ("tn", "fp")),
        ("PPV", f"called {name} and right", "tp", ("tp", "fp")),
        ("NPV", "cleared and right", "tn", ("tn", "fn")),
    )
    rows = [{"name": label, "what": what, "at_op": cell(op, label.lower(), hit, total),
             "at_half": cell(half, label.lower(), hit, total)} for label, what, hit, total in measures]  # fmt: skip
    counts = [
        (f"true positives: {name}, called {name}", op["counts"]["tp"], half["counts"]["tp"]),
        (f"false positives: not {name}, called {name}", op["counts"]["fp"], half["counts"]["fp"]),
        (f"false negatives: {name}, cleared", op["counts"]["fn"], half["counts"]["fn"]),
        (f"true negatives: not {name}, cleared", op["counts"]["tn"], half["counts"]["tn"]),
    ]
    stated = op.get("at_prevalence")
    at_prevalence = None
    if stated:
        at_prevalence = {
            "prevalence": percent(stated["prevalence"]),
            "ppv": _share(stated["ppv"], stated["ppv_ci"]),
            "npv": _share(stated["npv"], stated["npv_ci"]),
        }
    return {
        "threshold": f"{op['threshold']:.2f}",
        "rule": op.get("rule_words") or op.get("rule"),
        "rows": rows,
        "counts": counts,
        "split_prevalence": percent(op["prevalence"]) if op.get("prevalence") is not None else "n/a",
        "at_prevalence": at_prevalence,
    }


def _percent_interval(ci: dict[str, Any], key: str, positive: dict[str, Any]) -> str:
    """``0 – 6.4%`` (one decimal below 10%, where whole percents would round an edge to 0), or undefined."""
    bounds = ci.get(key)
    if not bounds:
        return _interval(ci, key, positive.get(key))
    return _percent_bounds(bounds)


def _percent_bounds(bounds: list[float]) -> str:
    """``0 – 6.4%``: one decimal near 0 or 100% (where whole percents would round an edge away), else none."""
    return interval_text(bounds, 1 if min(bounds[0], 1 - bounds[1]) < 0.1 else 0, 100) + "%"


def _training_rows(status: dict[str, Any], config: ExperimentConfig) -> list[tuple[str, str]]:
    rows = [("started", when(status.get("started")))]
    if status.get("resumed"):
        rows.append(("resumed", ", ".join(when(t) for t in status["resumed"])))
    seconds = status.get("epoch_seconds") or {}
    if seconds:
        rows.append(("training time", f"{duration(sum(seconds.values()))} ({duration(max(seconds.values()))} "
                                      "for the slowest epoch)"))  # fmt: skip
    if "epochs" in status:
        rows.append(("epochs trained", f"{status['epochs']} of {config.total_epochs}"))
    if "stopped_early" in status:
        rows.append(("stopped early", "yes (early stopping)" if status["stopped_early"] else "no"))
    if status.get("best_epoch") is not None:
        monitor = metric_label(str(status.get("monitor", "")).replace("/", "_"))
        score = status.get("best_score")
        rows.append(("best epoch", f"{status['best_epoch']} ({monitor} {number(score, 4)})"))
    if status.get("parameters"):
        rows.append(("parameters", f"{count(status['parameters'])} ({status['parameters']:,})"))
    batch = config.data.batch_size
    rows.append(("batch size", str(batch)))
    return rows


def _environment_rows(environment: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if environment.get("python"):
        rows.append(("Python", environment["python"]))
    if environment.get("platform"):
        rows.append(("platform", environment["platform"]))
    device = environment.get("device") or {}
    if isinstance(device, dict) and device:
        parts = [str(name) for name in device.get("gpus") or []]
        if device.get("cuda"):
            parts.append(f"CUDA {device['cuda']}")
        if device.get("cpu_count"):
            parts.append(f"{device['cpu_count']} CPU cores")
        if device.get("torch_threads"):
            parts.append(f"{device['torch_threads']} torch threads")
        rows.append(("device", ", ".join(parts)))
    if environment.get("seed") is not None:
        rows.append(("seed", str(environment["seed"])))
    git = environment.get("git")
    if isinstance(git, dict) and git.get("commit"):
        rows.append(("source code", f"git commit {git['commit'][:10]}" + (" with uncommitted changes"
                                                                          if git.get("dirty") else "")))  # fmt: skip
    packages = environment.get("packages") or {}
    if packages:
        rows.append(("packages", ", ".join(f"{name} {version}" for name, version in packages.items() if version)))
    return rows


def report_context(
    run: RunDir, config: ExperimentConfig, result: EvaluationResult, plots: dict[str, Path]
) -> dict[str, Any]:
    status = run.read_status()
    data = run.read_data_summary() if run.data_path.is_file() else {}
    environment = run.read_environment()
    pct = round(100 * result.extra.get("bootstrap", {}).get("confidence", 0.95))
    definitions = metric_definitions()
    classes = result.extra.get("classes") or data.get("classes", [])
    if result.task == "binary" and len(classes) == 2:  # name the class, whichever of the two is called positive
        definitions = {k: v.replace("P(class 1)", f"P({class_name(classes[1])})") for k, v in definitions.items()}
    metric_rows = [
        {"name": metric_label(name), "key": name, "value": number(value, 4),
         "interval": interval_text(result.intervals.get(name), 4, computed=name in result.undefined_intervals),
         "definition": definitions.get(name, "")}
        for name, value in result.metrics.items()
    ]  # fmt: skip
    per_class = [
        {
            c: _with_interval(row[c], (row.get("ci") or {}).get(c), "ci" in row and c in INTERVAL_COLUMNS)
            for c in PER_CLASS_COLUMNS
        }
        for row in result.per_class
    ]
    for row in per_class:
        row["class"]["value"] = class_name(row["class"]["value"])
    positive = result.extra.get("positive_class")
    positive_rows = []
    if positive:
        ci = positive.get("ci") or {}
        labels = {"sensitivity": "sensitivity (recall)", "specificity": "specificity", "ppv": "PPV (precision)",
                  "npv": "NPV", "f1": "F1", "auc": "ROC AUC", "ap": "average precision (PR AUC)"}  # fmt: skip
        positive_rows = [
            {"name": label, "value": number(positive.get(key), 4), "interval": _interval(ci, key, positive.get(key), 4)}
            for key, label in labels.items()
        ]
    fitted = ["the temperature"]
    if result.operating_point:
        fitted.append("the operating threshold")
    if result.extra.get("thresholds"):
        fitted.append("the per-label thresholds")
    fitted_on_val = (", ".join(fitted[:-1]) + " and " + fitted[-1] + " were") if len(fitted) > 1 else fitted[0] + " was"
    dataset_name = result.extra.get("dataset", "")
    positive_name = positive["class"] if positive else None
    facts = [
        ("Question", question(result.task, result.extra.get("classes") or data.get("classes", []), positive_name)),
        ("Data", _data_sentence(data, result)),
        ("Model", _model_sentence(config, status)),
        ("Training", _training_sentence(config, status, result)),
        ("Evaluated on", _evaluated_on(result, (data.get("source") or {}).get("fold"))),
    ]  # fmt: skip
    if positive:
        facts.insert(1, ("Positive class", f"{positive['class']}: sensitivity, specificity, PPV and NPV are about "
                                           f"finding it"))  # fmt: skip
    return {
        "gate_section": gate_section(run, result.split, result.checkpoint),
        "external_section": external_sections(run) if (result.split, result.checkpoint) == ("test", "best") else "",
        "title": f"{config.model.name} on {dataset_name}",
        "experiment": config.experiment if config.experiment != dataset_name else "",
        "run_name": run.path.name,
        "result": result,
        "status": status,
        "facts": facts,
        "headline": metric_rows[:4],
        "positive_sentences": _positive_sentences(positive, result.operating_point, result.n_samples, pct)
        if positive
        else [],
        "weakness": result.extra.get("weak", []),
        "metric_rows": metric_rows,
        "undefined_notes": result.undefined_notes(),
        "fitted_on_val": fitted_on_val + " fitted",
        "confidence_pct": pct,
        "resamples": result.extra.get("bootstrap", {}).get("resamples", 0),
        "per_class_columns": [(c, PER_CLASS_LABELS[c]) for c in PER_CLASS_COLUMNS],
        "per_class": per_class,
        "positive": positive,
        "positive_rows": positive_rows,
        "warnings": result.extra.get("warnings", []),
        "calibration": {k: number(v, 4) if isinstance(v, float) else v for k, v in result.calibration.items()},
        "operating_point": result.operating_point,
        "operating": _operating_block(result.operating_point, class_name(positive["class"]))
        if result.operating_point and positive and "counts" in result.operating_point
        else None,
        "fmt": number,
        "plots": {name: (PLOT_TITLES[name], path) for name, path in plots.items()},
        "data": data,
        "class_name": class_name,
        "training_rows": _training_rows(status, config),
        "environment_rows": _environment_rows(environment),
        "config_yaml": run.config_path.read_text(encoding="utf-8"),
        "subgroups": _subgroup_tables(result),
        "small_subgroup": SMALL,
    }


def _subgroup_tables(result: EvaluationResult) -> list[dict[str, Any]]:
    """Per attribute: its gap sentence, the column labels and one row of cells per subgroup (value, interval)."""
    entries = result.extra.get("subgroups") or []
    resamples = result.extra.get("bootstrap", {}).get("resamples", 0)
    positive = (result.extra.get("positive_class") or {}).get("class")
    tables = []
    for entry in entries:
        classes = [row["class"] for row in entry["subgroups"][0]["per_class"]] if entry["subgroups"] else []
        shown = [positive] if positive else classes
        metrics = [m for m in result.metrics if any(m in g["metrics"] for g in entry["subgroups"])]
        columns = ["subgroup", "images", *(metric_label(m) for m in metrics)]
        for name in shown:
            columns += [f"sensitivity {class_name(name)}", f"specificity {class_name(name)}"]
        rows = []
        for group in entry["subgroups"]:
            cells = [{"value": str(group["value"]), "interval": "small" if group["small"] else ""},
                     {"value": f"{group['n']:,}", "interval": ""}]  # fmt: skip
            cells += [_subgroup_cell(group["metrics"].get(m), group["intervals"].get(m), resamples) for m in metrics]
            by_class = {row["class"]: row for row in group["per_class"]}
            for name in shown:
                row = by_class[name]
                ci = row.get("ci") or {}
                cells += [_subgroup_cell(row[k], ci.get(k), resamples) for k in ("sensitivity", "specificity")]
            rows.append(cells)
        tables.append({"name": entry["name"], "column": entry["column"], "gap": gap_sentence(entry),
                       "columns": columns, "rows": rows})  # fmt: skip
    return tables


def _subgroup_cell(value: Any, interval: list[float] | None, resamples: int) -> dict[str, str]:
    """A subgroup's value with its interval, or "undefined" where the bootstrap had one and this value has
    none (a class too rare in the subgroup, or every resample alike): a bare number would look precise."""
    return _with_interval(value, interval, bool(resamples))


def _with_interval(value: Any, interval: list[float] | None, computed: bool = False) -> dict[str, str]:
    """A per-class cell: the value and its interval (shown under it in the HTML), "undefined" where intervals were
    computed and this value has none."""
    return {
        "value": number(value, 3),
        "interval": interval_text(interval, 3, dash="–", computed=computed) if isinstance(value, float) else "",
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medclass.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["embed"] = png_data_uri
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


MARK_START, MARK_END = "<!-- gate:start -->", "<!-- gate:end -->"  # around the gate's section


def gate_section(run: RunDir, split: str, checkpoint: str) -> str:
    """The report's section on the gate: its settings and validation pass rates, and the results of
    ``evaluate --ood`` when there are some (empty without a gate)."""
    import html

    gate_json = run.gate_dir(checkpoint) / "gate.json"
    if not gate_json.is_file():
        return ""
    gate = read_json(gate_json)
    val = gate.get("val", {})
    parts = [
        "<h2>Gate: images the model should not answer</h2>",
        f"<p>Out-of-distribution score ({html.escape(str(gate.get('detector')))}, fitted on "
        f"{gate.get('fitted_on', {}).get('train')} training images) with its threshold chosen on validation so that "
        f"{gate.get('accept', 0):.0%} pass; image-quality limits from the training images. On validation: "
        f"{val.get('in_distribution', 0):.1%} look like the training images, {val.get('quality_passed', 0):.1%} "
        f"pass the quality check, {val.get('accepted', 0):.1%} are accepted.</p>",
    ]
    ood_json = run.ood_dir(split, checkpoint) / "ood.json"
    if not ood_json.is_file():
        command = "medclass evaluate RUN --ood FOLDER"  # no absolute path: a report may be moved
        parts.append(f"<p>How well it flags foreign and degraded images: <code>{command}</code>.</p>")
        return "\n".join(parts)
    result = read_json(ood_json)
    clean = result["clean"]
    parts.append(f"<p>Clean {html.escape(split)} images ({result['images']}): {clean['in_distribution']:.1%} look like "
                 f"the training images, {clean['quality_passed']:.1%} pass the quality check, "
                 f"{clean['accepted']:.1%} are accepted.</p>")  # fmt: skip
    if result["foreign"]:
        rows = "".join(
            f"<tr><td>{html.escape(f['name'])}</td><td>{f['images']}</td><td>{f['auroc']:.3f}</td>"
            f"<td>{f['fpr95']:.3f}</td><td>{f['flagged']:.1%}</td><td>{f['detection_accuracy']:.3f}</td>"
            f"<td>{f['gate_rejected']:.1%}</td></tr>"
            for f in result["foreign"]
        )
        parts.append("<table><tr><th>foreign set</th><th>images</th><th>AUROC</th><th>FPR@95TPR</th><th>flagged</th>"
                     f"<th>detection accuracy</th><th>gate rejects</th></tr>{rows}</table>")  # fmt: skip
    rows = "".join(
        f"<tr><td>{html.escape(d['degradation'])}</td><td>{d['quality_caught']:.1%}</td><td>{d['ood_flagged']:.1%}</td>"
        f"<td>{d['gate_rejected']:.1%}</td></tr>"
        for d in result["degraded"]
    )
    parts.append("<table><tr><th>degraded test images</th><th>quality check catches</th><th>score flags</th>"
                 f"<th>gate rejects</th></tr>{rows}</table>")  # fmt: skip
    plot = run.ood_dir(split, checkpoint) / "ood.png"
    if plot.is_file():
        parts.append(f'<img src="{png_data_uri(plot)}" alt="out-of-distribution scores and degraded images rejected" '
                     'style="max-width:100%">')  # fmt: skip
    return "\n".join(parts)


def external_sections(run: RunDir) -> str:
    """The sections of every external set the run was evaluated on (``evaluate RUN --external``)."""
    return "\n".join(render_section(read_json(path), ExternalDir(path.parent)) for path in run.external_results())


def refresh_gate_section(run: RunDir, split: str, checkpoint: str) -> None:
    """Put the gate section into an existing report.html (between its markers)."""
    report = run.report_dir(split, checkpoint) / "report.html"
    if not report.is_file():
        return
    text = report.read_text(encoding="utf-8")
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        return
    section = gate_section(run, split, checkpoint)
    atomic_write_text(report, text[: start + len(MARK_START)] + "\n" + section + "\n" + text[end:])
