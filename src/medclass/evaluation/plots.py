"""The evaluation plots (PNG): confusion matrices, ROC and precision-recall curves, reliability diagram, training
curves and the worst-classified images. Figures are built as matplotlib ``Figure`` objects (no pyplot state) and
written atomically; the curves are drawn by scikit-learn's display classes."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    confusion_matrix,
    multilabel_confusion_matrix,
)

from medclass.evaluation.calibration import ReliabilityCurve
from medclass.io import save_figure
from medclass.metrics import metric_label
from medclass.tasks import Task
from medclass.wording import wrap_class


def confusion_figure(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], task: Task, normalize: bool, title: str | None = None
) -> Figure:
    """Counts, or rows normalised to 1 (each row then reads as the recall of that true class)."""
    labels = [wrap_class(c) for c in classes]
    if task == "multilabel":
        matrices = multilabel_confusion_matrix(y_true.astype(np.int64), y_pred)
        columns = min(5, len(classes))
        rows = (len(classes) + columns - 1) // columns
        fig = Figure(figsize=(2.6 * columns, 2.7 * rows + 0.4), layout="constrained")
        for i, matrix in enumerate(matrices):
            ax = fig.add_subplot(rows, columns, i + 1)
            shown = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True)) if normalize else matrix
            ConfusionMatrixDisplay(shown, display_labels=["absent", "present"]).plot(
                ax=ax, colorbar=False, values_format=".2f" if normalize else "d"
            )
            ax.set_title(labels[i], fontsize=9)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)
    else:
        lines = max(label.count("\n") + 1 for label in labels)
        size = max(4.5, 0.6 * len(classes) + 2.5 + 0.15 * lines)
        fig = Figure(figsize=(size, size), layout="constrained")
        ax = fig.add_subplot()
        matrix = confusion_matrix(
            y_true.reshape(-1), y_pred, labels=np.arange(len(classes)), normalize="true" if normalize else None
        )
        shown = ConfusionMatrixDisplay(matrix, display_labels=labels).plot(
            ax=ax, colorbar=True, values_format=".2f" if normalize else "d"
        )
        shown.im_.colorbar.set_label("share of the true class" if normalize else "images")
        if len(classes) > 3 or lines > 1:  # vertical, so that wrapped names never run into each other
            for tick in ax.get_xticklabels():
                tick.set_rotation(90)
                tick.set_verticalalignment("top")
                tick.set_horizontalalignment("center")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    title = title or ("Confusion matrix, row-normalised (each row: share of that true class)" if normalize
                      else "Confusion matrix (image counts)")  # fmt: skip
    fig.suptitle(
        textwrap.fill(title, width=int(fig.get_figwidth() * 11), break_on_hyphens=False)
    )  # wrapped to the figure, never cut
    return fig


def _binary_columns(y_true: np.ndarray, y_score: np.ndarray, task: Task, classes: list[str], positive: int | None):
    """(name, truth 0/1, score) per curve: the positive class for binary tasks, else one per class or label."""
    if task == "binary":
        k = 1 if positive is None else positive
        return [(classes[k], (y_true.reshape(-1) == k).astype(int), y_score[:, k])]
    if task == "multilabel":
        return [(c, y_true[:, i].astype(int), y_score[:, i]) for i, c in enumerate(classes)]
    truth = y_true.reshape(-1)
    return [(c, (truth == i).astype(int), y_score[:, i]) for i, c in enumerate(classes)]


def roc_pr_figure(
    y_true: np.ndarray, y_score: np.ndarray, classes: list[str], task: Task, positive: int | None = None,
    operating_point: dict | None = None, split: str = "test",
) -> Figure:  # fmt: skip
    """ROC (left) and precision-recall (right) curves with their AUC and AP: for a binary task those of detecting
    its positive class, with the decision points marked (the threshold chosen on validation, and 0.5), else
    one-vs-rest per class."""
    fig = Figure(figsize=(12, 5.4), layout="constrained")
    roc_ax, pr_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, truth, score in _binary_columns(y_true, y_score, task, classes, positive):
        if truth.min() == truth.max():
            continue  # no curve without positives and negatives
        label = wrap_class(name)
        RocCurveDisplay.from_predictions(truth, score, ax=roc_ax, name=label, plot_chance_level=False)
        PrecisionRecallDisplay.from_predictions(truth, score, ax=pr_ax, name=label)
        if task == "binary":  # a model without skill has precision = prevalence at every recall
            pr_ax.axhline(truth.mean(), linestyle=":", color="gray", linewidth=1,
                          label=f"prevalence {truth.mean():.2f} (a model without skill)")  # fmt: skip
    roc_ax.plot([0, 1], [0, 1], linestyle=":", color="gray", linewidth=1, label="chance")
    if task == "binary" and operating_point:
        marks = (
            (operating_point, "o", f"threshold {operating_point['threshold']:.2f} (chosen on validation)"),
            (operating_point["at_0.5"], "s", "threshold 0.50"),
        )
        for point, marker, label in marks:
            x, y = 1 - point["specificity"], point["sensitivity"]
            roc_ax.plot([x], [y], marker=marker, markersize=8, linestyle="none", markeredgecolor="black",
                        label=f"{label}: sensitivity {y:.2f}, specificity {1 - x:.2f}")  # fmt: skip
    scope = (
        f"detecting {_one_line(classes[1 if positive is None else positive])}"
        if task == "binary"
        else "one class against the rest"
    )
    roc_ax.set_title(f"ROC curve, {scope} ({split} split)")
    roc_ax.set_xlabel("false positive rate (1 - specificity)")
    roc_ax.set_ylabel("true positive rate (sensitivity)")
    pr_ax.set_title(f"Precision-recall curve, {scope}")
    pr_ax.set_xlabel("recall (sensitivity)")
    pr_ax.set_ylabel("precision (PPV)")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
    return fig


def _one_line(name: str, limit: int = 40) -> str:
    """A class name inside a title: whole, unless it is very long (then cut at a word boundary with an ellipsis)."""
    return name if len(name) <= limit else textwrap.shorten(name, limit, placeholder=" …")


def reliability_figure(
    before: ReliabilityCurve, ece_before: float, after: ReliabilityCurve | None, ece_after: float | None,
    temperature: float | None, split: str = "test",
) -> Figure:  # fmt: skip
    """Observed accuracy against confidence per bin; the diagonal is perfect calibration. The histogram below
    shows how many predictions fall in each bin."""
    fig = Figure(figsize=(5.5, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax, hist = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="perfect calibration")
    ax.plot(before.confidence, before.accuracy, marker="o", label=f"model (ECE {ece_before:.3f})")
    if after is not None and ece_after is not None:
        ax.plot(after.confidence, after.accuracy, marker="s",
                label=f"with temperature {temperature:.2f} (ECE {ece_after:.3f})")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (predicted probability)")
    ax.set_ylabel("observed accuracy")
    ax.set_title(f"Reliability diagram ({split} split)")
    ax.legend(fontsize=8, loc="upper left")
    hist.bar(before.confidence, before.counts, width=0.04, color="tab:blue")
    hist.set_xlim(0, 1)
    hist.set_xlabel("confidence (predicted probability)")
    hist.set_ylabel("images")
    return fig


def read_epochs(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


CURVE_METRICS = ("acc", "auc", "f1_macro", "balanced_acc")


def training_curves_figure(
    epochs: list[dict[str, str]], monitor: str, best_epoch: int | None = None, loss_name: str = "loss"
) -> Figure | None:
    """Training and validation loss (left) and validation metrics (right) per epoch, numbered from 1; stage
    changes dashed, the best epoch (the checkpoint evaluated) marked on both panels."""
    if not epochs:
        return None

    def column(name: str) -> np.ndarray:
        return np.array([float(row[name]) if row.get(name) not in (None, "") else np.nan for row in epochs])

    x = np.array([int(row["epoch"]) for row in epochs])
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    loss_ax, metric_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    loss_ax.plot(x, column("train_loss"), marker=".", label="training loss")
    loss_ax.plot(x, column("val_loss"), marker=".", label="validation loss")
    for name in CURVE_METRICS:
        if f"val_{name}" in epochs[0]:
            metric_ax.plot(x, column(f"val_{name}"), marker=".", label=metric_label(f"val_{name}"))
    chosen_by = metric_label(monitor if monitor.startswith("val") else f"val_{monitor}")
    for ax in (loss_ax, metric_ax):
        for previous, row in zip(epochs, epochs[1:], strict=False):
            if row.get("stage") != previous.get("stage"):
                ax.axvline(int(row["epoch"]) - 0.5, linestyle="--", color="gray", linewidth=1,
                           label=f"stage {row.get('stage')} starts" if ax is loss_ax else None)  # fmt: skip
        if best_epoch is not None:  # a band behind the points, not a line through them
            ax.axvspan(best_epoch - 0.3, best_epoch + 0.3, color="tab:green", alpha=0.18, linewidth=0,
                       label=f"best epoch {best_epoch}, chosen by {chosen_by}")  # fmt: skip
        ax.set_xlabel("epoch")
        if len(x) <= 12:
            ax.set_xticks(x)  # every epoch; one epoch: a tick at 1, not 0.945 ... 1.050
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(x.min() - 0.5, x.max() + 0.5)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8)
    loss_ax.set_title("Loss per epoch")
    loss_ax.set_ylabel(loss_name)
    metric_ax.set_title("Validation metrics per epoch")
    metric_ax.set_ylabel("metric value")
    return fig


def worst_images_figure(images: list[np.ndarray], captions: list[str], title: str) -> Figure | None:
    if not images:
        return None
    columns = min(6, len(images))
    rows = (len(images) + columns - 1) // columns
    lines = max(caption.count("\n") + 1 for caption in captions)
    fig = Figure(figsize=(2.0 * columns, (2.1 + 0.16 * lines) * rows + 0.5), layout="constrained")
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        ax = fig.add_subplot(rows, columns, i + 1)
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7, loc="left")
        ax.axis("off")
    fig.suptitle(title)
    return fig


COPIES_PER_ROW = 6  # thumbnails per row of the copies figure


def copy_caption(group: int, sign: str, where: str, name: str, label: str) -> str:
    """A thumbnail's caption in the copies figure: group number and kind (= identical, ≈ near), where the image is
    (its split, or external), the whole file name wrapped (never cut) and the label."""
    return f"{group} {sign} {where}\n" + "\n".join(textwrap.wrap(name, 26)) + f"\n{wrap_class(label)}"


def copies_figure(groups: list[list[tuple[np.ndarray, str]]], title: str) -> Figure | None:
    """Thumbnails of groups of copies (identical or near-duplicate images), each group on one row of its own
    (a group never spans two rows; rows hold several small groups side by side), each image captioned."""
    groups = [g[:COPIES_PER_ROW] for g in groups if g]
    if not groups:
        return None
    rows: list[list[tuple[np.ndarray, str]]] = [[]]
    for group in groups:
        if rows[-1] and len(rows[-1]) + len(group) > COPIES_PER_ROW:
            rows.append([])
        rows[-1].extend(group)
    columns = max(len(row) for row in rows)
    lines = max(caption.count("\n") + 1 for group in groups for _, caption in group)
    fig = Figure(figsize=(1.9 * columns, (1.9 + 0.15 * lines) * len(rows) + 0.5), layout="constrained")
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            ax = fig.add_subplot(len(rows), columns, r * columns + c + 1)
            grey = image.shape[-1] == 1
            ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255)
            ax.set_title(caption, fontsize=7, loc="left")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title)
    return fig


def subgroup_figure(entries: list[dict], overall: dict[str, float], confidence_pct: int) -> Figure | None:
    """Forest plot: per attribute, each subgroup's headline value (AUC and ACC where defined) with its bootstrap
    interval, labelled with its size; the dashed lines are the whole split's values."""
    if not entries:
        return None
    measures = [m for m in ("auc", "acc") if overall.get(m) is not None]
    rows = sum(len(entry["subgroups"]) for entry in entries)
    fig = Figure(figsize=(7.5, 1.2 + 0.42 * rows + 0.5 * len(entries)), layout="constrained")
    axes = fig.subplots(len(entries), 1, squeeze=False, sharex=True,
                        height_ratios=[max(1, len(e["subgroups"])) for e in entries])[:, 0]  # fmt: skip
    colours = {"auc": "tab:blue", "acc": "tab:orange"}
    for ax, entry in zip(axes, entries, strict=True):
        groups = entry["subgroups"]
        positions = np.arange(len(groups))[::-1]
        for k, measure in enumerate(measures):
            offset = (k - (len(measures) - 1) / 2) * 0.22
            for y, group in zip(positions, groups, strict=True):
                value = group["metrics"].get(measure)
                if value is None:
                    continue
                bounds = group["intervals"].get(measure)
                xerr = None if not bounds else [[max(0.0, value - bounds[0])], [max(0.0, bounds[1] - value)]]
                # hollow: no interval (too few images of a class in the resamples), so not a precise value
                ax.errorbar(value, y + offset, xerr=xerr, fmt="o", color=colours[measure], capsize=3, markersize=5,
                            markerfacecolor=colours[measure] if bounds else "white")  # fmt: skip
            ax.axvline(overall[measure], color=colours[measure], linestyle="--", linewidth=1)
        labels = [f"{_one_line(str(g['value']), 24)} (n={g['n']}{', small' if g['small'] else ''})" for g in groups]
        ax.set_yticks(positions, labels)
        ax.set_ylim(-0.7, len(groups) - 0.3)
        ax.set_title(entry["name"], loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=colours[m], marker="o", linestyle="", label=metric_label(m)) for m in measures]
    if any(g["metrics"].get(m) is not None and not g["intervals"].get(m)
           for e in entries for g in e["subgroups"] for m in measures):  # fmt: skip
        handles.append(Line2D([], [], color="gray", marker="o", markerfacecolor="white", linestyle="",
                              label="no interval (too few images)"))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    # the axis spans the values and their intervals (not 0..1, where a gap of a few points would not show)
    ends = [overall[m] for m in measures]
    for entry in entries:
        for group in entry["subgroups"]:
            for m in measures:
                value, bounds = group["metrics"].get(m), group["intervals"].get(m)
                ends += [v for v in ([value] + list(bounds or [])) if v is not None]
    axes[-1].set_xlim(max(0.0, min(ends) - 0.03), min(1.0, max(ends)) + 0.02)
    axes[-1].set_xlabel(f"value with {confidence_pct}% bootstrap interval; dashed: the whole split")
    fig.suptitle("Results by subgroup")
    return fig


def _saved(build):
    """plot_<name>(path, ...) for each <name>_figure(...): the figure written to ``path`` (None when there is
    nothing to draw). The builders return the Figure, so tests read its titles and labels through its artists."""

    def plot(path: Path, *args, **kwargs) -> Path | None:
        fig = build(*args, **kwargs)
        return None if fig is None else save_figure(fig, path)

    plot.__doc__ = build.__doc__
    return plot


plot_confusion = _saved(confusion_figure)
plot_roc_pr = _saved(roc_pr_figure)
plot_reliability = _saved(reliability_figure)
plot_training_curves = _saved(training_curves_figure)
plot_worst_images = _saved(worst_images_figure)
plot_subgroups = _saved(subgroup_figure)
plot_copies = _saved(copies_figure)
