"""The evaluation plots (PNG): confusion matrices, ROC and precision-recall curves, reliability diagram, training
curves and the worst-classified images. Figures are built as matplotlib ``Figure`` objects (no pyplot state) and
written atomically; the curves are drawn by scikit-learn's display classes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    confusion_matrix,
    multilabel_confusion_matrix,
)

from medclass.evaluation.calibration import ReliabilityCurve
from medclass.io import atomic_write_bytes
from medclass.tasks import Task


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_confusion(
    path: Path, y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], task: Task, normalize: bool
) -> Path:
    """Counts, or rows normalised to 1 (each row then reads as the recall of that true class)."""
    labels = [_short(c) for c in classes]
    if task == "multilabel":
        matrices = multilabel_confusion_matrix(y_true.astype(np.int64), y_pred)
        columns = min(5, len(classes))
        rows = (len(classes) + columns - 1) // columns
        fig = Figure(figsize=(2.6 * columns, 2.5 * rows + 0.4))
        for i, matrix in enumerate(matrices):
            ax = fig.add_subplot(rows, columns, i + 1)
            shown = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True)) if normalize else matrix
            ConfusionMatrixDisplay(shown, display_labels=["no", "yes"]).plot(
                ax=ax, colorbar=False, values_format=".2f" if normalize else "d"
            )
            ax.set_title(labels[i], fontsize=9)
    else:
        size = max(4.5, 0.55 * len(classes) + 2.5)
        fig = Figure(figsize=(size, size))
        ax = fig.add_subplot()
        matrix = confusion_matrix(
            y_true.reshape(-1), y_pred, labels=np.arange(len(classes)), normalize="true" if normalize else None
        )
        ConfusionMatrixDisplay(matrix, display_labels=labels).plot(
            ax=ax, colorbar=False, xticks_rotation=45, values_format=".2f" if normalize else "d"
        )
    fig.suptitle("confusion matrix" + (" (rows normalised: recall per true class)" if normalize else " (counts)"))
    return save_figure(fig, path)


def _binary_columns(y_true: np.ndarray, y_score: np.ndarray, task: Task, classes: list[str], positive: int | None):
    """(name, truth 0/1, score) per curve: the positive class for binary tasks, else one per class or label."""
    if task == "binary":
        k = 1 if positive is None else positive
        return [(classes[k], (y_true.reshape(-1) == k).astype(int), y_score[:, k])]
    if task == "multilabel":
        return [(c, y_true[:, i].astype(int), y_score[:, i]) for i, c in enumerate(classes)]
    truth = y_true.reshape(-1)
    return [(c, (truth == i).astype(int), y_score[:, i]) for i, c in enumerate(classes)]


def plot_roc_pr(
    path: Path, y_true: np.ndarray, y_score: np.ndarray, classes: list[str], task: Task, positive: int | None = None
) -> Path:
    """ROC (left) and precision-recall (right) curves with their AUC and AP: for a binary task those of detecting
    its positive class, else one-vs-rest per class."""
    fig = Figure(figsize=(12, 5.2))
    roc_ax, pr_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, truth, score in _binary_columns(y_true, y_score, task, classes, positive):
        if truth.min() == truth.max():
            continue  # no curve without positives and negatives
        RocCurveDisplay.from_predictions(truth, score, ax=roc_ax, name=_short(name), plot_chance_level=False)
        PrecisionRecallDisplay.from_predictions(truth, score, ax=pr_ax, name=_short(name))
    roc_ax.plot([0, 1], [0, 1], linestyle=":", color="gray", linewidth=1)
    scope = (
        f"positive class: {_short(classes[1 if positive is None else positive])}"
        if task == "binary"
        else "one-vs-rest per class"
    )
    roc_ax.set_title(f"ROC ({scope})")
    roc_ax.set_xlabel("false positive rate (1 - specificity)")
    roc_ax.set_ylabel("sensitivity")
    pr_ax.set_title(f"precision-recall ({scope})")
    pr_ax.set_xlabel("recall (sensitivity)")
    pr_ax.set_ylabel("precision (PPV)")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
    return save_figure(fig, path)


def plot_reliability(
    path: Path, before: ReliabilityCurve, ece_before: float, after: ReliabilityCurve | None, ece_after: float | None,
    temperature: float | None,
) -> Path:  # fmt: skip
    """Observed accuracy against confidence per bin; the diagonal is perfect calibration. The histogram below
    shows how many predictions fall in each bin."""
    fig = Figure(figsize=(5.5, 6.2))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax, hist = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="perfect calibration")
    ax.plot(before.confidence, before.accuracy, marker="o", label=f"model (ECE {ece_before:.3f})")
    if after is not None and ece_after is not None:
        ax.plot(after.confidence, after.accuracy, marker="s", label=f"T = {temperature:.2f} (ECE {ece_after:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("observed accuracy")
    ax.set_title("reliability diagram (test split)")
    ax.legend(fontsize=8, loc="upper left")
    hist.bar(before.confidence, before.counts, width=0.04, color="tab:blue")
    hist.set_xlim(0, 1)
    hist.set_xlabel("confidence")
    hist.set_ylabel("predictions")
    return save_figure(fig, path)


def read_epochs(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def plot_training_curves(path: Path, epochs: list[dict[str, str]], monitor: str) -> Path | None:
    """Training and validation loss (left) and validation metrics (right) per epoch; stage changes dashed."""
    if not epochs:
        return None

    def column(name: str) -> np.ndarray:
        return np.array([float(row[name]) if row.get(name) not in (None, "") else np.nan for row in epochs])

    x = np.array([int(row["epoch"]) for row in epochs])
    fig = Figure(figsize=(12, 4.5))
    loss_ax, metric_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    loss_ax.plot(x, column("train_loss"), marker=".", label="train loss")
    loss_ax.plot(x, column("val_loss"), marker=".", label="validation loss")
    for name in ("acc", "auc", "f1_macro", "balanced_acc"):
        if f"val_{name}" in epochs[0]:
            metric_ax.plot(x, column(f"val_{name}"), marker=".", label=f"val {name}")
    for ax in (loss_ax, metric_ax):
        for previous, row in zip(epochs, epochs[1:], strict=False):
            if row.get("stage") != previous.get("stage"):
                ax.axvline(int(row["epoch"]) - 0.5, linestyle="--", color="gray", linewidth=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    loss_ax.set_title("loss")
    metric_ax.set_title(f"validation metrics (best epoch chosen by {monitor})")
    return save_figure(fig, path)


def plot_worst_images(path: Path, images: list[np.ndarray], captions: list[str], title: str) -> Path | None:
    if not images:
        return None
    columns = min(8, len(images))
    rows = (len(images) + columns - 1) // columns
    fig = Figure(figsize=(1.9 * columns, 2.2 * rows + 0.5))
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        ax = fig.add_subplot(rows, columns, i + 1)
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7)
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
