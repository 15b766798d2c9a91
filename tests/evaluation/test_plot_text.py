"""What the plots say, read through matplotlib's artists: titles and axis labels in words, legends in human metric
names, class names whole (wrapped between words, never cut) and the same in every plot, the best epoch and the
operating points marked, one-epoch runs with one tick at 1."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.text import Text

from medclass.config import load_config
from medclass.data import load_dataset
from medclass.evaluation.plots import (
    confusion_figure,
    read_epochs,
    roc_pr_figure,
    training_curves_figure,
    worst_images_figure,
)
from medclass.wording import class_name, short_file, wrap_class


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text().strip()]


def flat(text: str) -> str:
    return " ".join(text.split())


def titles(fig) -> list[str]:
    found = [ax.get_title(loc) for ax in fig.axes for loc in ("center", "left") if ax.get_title(loc)]
    return found + ([fig._suptitle.get_text()] if fig._suptitle is not None else [])


@pytest.fixture(scope="module")
def blood():
    """BloodMNIST's real test labels and class names (one of them 68 characters long), with scores that put most
    of the mass on the true class."""
    dataset = load_dataset(load_config(None, experiment="t", data={"source": "medmnist", "flag": "bloodmnist"}).data)
    labels = dataset.splits["test"].labels.reshape(-1)[:600]
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(8), size=len(labels)) * 0.5
    scores[np.arange(len(labels)), labels] += 0.5
    return dataset, labels, scores


def test_class_names_are_whole_and_the_same_in_every_plot(blood) -> None:
    dataset, labels, scores = blood
    classes = dataset.classes
    long_name = max(classes, key=len)
    assert len(long_name) > 60  # "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)"
    figures = [
        confusion_figure(labels, scores.argmax(1), classes, "multiclass", normalize=False),
        confusion_figure(labels, scores.argmax(1), classes, "multiclass", normalize=True),
        roc_pr_figure(labels, scores, classes, "multiclass"),
    ]
    for fig in figures:
        shown = texts(fig)
        assert not any("…" in t or "..." in t for t in shown), "no class name is cut"
        for name in classes:  # each class appears whole (its line breaks fall between words)
            assert any(class_name(name) in flat(t) for t in shown), (name, shown)
        assert any(wrap_class(long_name) in t for t in shown), "wrapped the same way everywhere"
        for title in titles(fig):
            assert title[0].isupper(), title
    confusion = figures[0].axes[0]
    assert confusion.get_xlabel() == "predicted class" and confusion.get_ylabel() == "true class"


def test_worst_image_captions_name_true_and_predicted_on_their_own_lines(blood) -> None:
    dataset, labels, _ = blood
    # long file names are shortened in the middle: the start and the extension stay
    short = short_file("ISIC_0024306_downsampled_from_the_archive.jpg")
    assert len(short) <= 24 and short.startswith("ISIC_00") and short.endswith(".jpg") and "…" in short
    images = [dataset.splits["test"].image(i) for i in range(3)]
    captions = [
        "image 0\ntrue: normal, benign\npredicted: malignant (P = 0.99)\nISIC_0024306_downsampled_long.jpg",
        f"image 1\ntrue: {wrap_class(dataset.classes[3])}\npredicted: basophil (P = 0.40)",
        "image 2\ntrue: platelet\npredicted: basophil (P = 0.30)",
    ]
    fig = worst_images_figure(images, captions, "Misclassified test images the model was surest about")
    shown = texts(fig)
    assert "true: normal, benign" in "\n".join(shown) and "predicted: malignant (P = 0.99)" in "\n".join(shown)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # the captions sit below the title (constrained layout), not over it
    renderer = fig.canvas.get_renderer()
    title_box = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert ax.title.get_window_extent(renderer).y1 <= title_box.y0 + 1


def test_training_curves_label_the_axes_and_mark_the_best_epoch(breast_run) -> None:
    epochs = read_epochs(breast_run.run_dir / "epochs.csv")
    fig = training_curves_figure(epochs, "loss", best_epoch=2, loss_name="cross-entropy")
    loss_ax, metric_ax = fig.axes
    assert loss_ax.get_title() == "Loss per epoch" and loss_ax.get_ylabel() == "cross-entropy"
    assert metric_ax.get_ylabel() and loss_ax.get_xlabel() == "epoch"
    legend = [t.get_text() for t in metric_ax.get_legend().get_texts()]
    assert "validation F1 macro" in legend and not any("_" in t for t in legend), legend
    assert "best epoch 2, chosen by validation loss" in legend

    one = training_curves_figure(epochs[:1], "auc", best_epoch=1)
    fig_ax = one.axes[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(one).draw()
    ticks = [t.get_text() for t in fig_ax.get_xticklabels() if t.get_text()]
    assert ticks == ["1"], ticks  # not 0.945 ... 1.050


def test_roc_marks_the_operating_points_of_a_binary_task(breast_run) -> None:
    import json

    saved = json.loads((breast_run.run_dir / "metrics.json").read_text())
    op = saved["operating_point"]
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 200)
    scores = np.stack([1 - (truth * 0.6 + rng.random(200) * 0.4), truth * 0.6 + rng.random(200) * 0.4], axis=1)
    fig = roc_pr_figure(truth, scores, ["normal, benign", "malignant"], "binary", 1, op)
    roc = fig.axes[0]
    legend = [t.get_text() for t in roc.get_legend().get_texts()]
    assert any(f"threshold {op['threshold']:.2f} (chosen on validation)" in t for t in legend), legend
    assert any(t.startswith("threshold 0.50") for t in legend)
    assert roc.get_title() == "ROC curve, detecting malignant (test split)"


def test_copies_across_splits_are_shown_group_by_group_with_whole_names(breast_run) -> None:
    from medclass.evaluation.plots import copies_figure
    from medclass.evaluation.report import copy_thumbnails

    dataset = load_dataset(load_config(None, experiment="t", data={"source": "medmnist", "flag": "breastmnist"}).data)
    groups, total = copy_thumbnails(dataset, limit=8)
    checks = dataset.identical.summary()
    assert total == checks["cross_split_groups"] + checks["near_cross_split_groups"] > 8 and len(groups) == 8
    # the published split's identical pair with two labels comes first: both images, both labels, side by side
    first = [caption for _, caption in groups[0]]
    assert first[0].startswith("1 = train\ntrain_images[") and first[1].startswith("1 = test\ntest_images[")
    assert {c.rsplit("\n", 1)[1] for c in first} == {"malignant", wrap_class("normal, benign")}
    assert np.array_equal(groups[0][0][0], groups[0][1][0])  # identical pixels
    assert any("≈" in caption for group in groups for _, caption in group)
    fig = copies_figure(groups, "copies")
    shown = iter(fig.axes)
    for group in groups:  # every group on one row of the figure
        rows = {round(next(shown).get_position().y0, 3) for _ in group}
        assert len(rows) == 1
    # the run's report shows the same thumbnails beside the leakage warning
    report = (breast_run.run_dir / "report" / "report.html").read_text()
    assert (breast_run.run_dir / "report" / "copies.png").is_file()
    order = ("Warning:</strong> LEAKAGE", "Copies across splits: identical", "<h2>Metrics")
    where = [report.index(text) for text in order]
    assert where == sorted(where)
