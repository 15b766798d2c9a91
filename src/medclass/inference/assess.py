"""Evaluate a model package (a single model or an ensemble) on any dataset a config describes: the way to test a
packaged model on an external set, and how a series scores its ensemble on the test split.

The numbers are those of a run's evaluation (every summary metric, intervals of the headline ones, the per-class
table with its intervals, the weak-model notes) from the package's probabilities at P > 0.5 / argmax. Nothing is
fitted here: a package has no validation split of this dataset to fit a temperature or threshold on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medclass.config import EvaluationConfig
from medclass.config.data import LoaderFields, check_split
from medclass.data import ImageSplit, LabelledImages, load_dataset
from medclass.errors import UserError
from medclass.evaluation.bootstrap import Intervals, headline_intervals
from medclass.evaluation.clinical import per_class_intervals, per_class_table
from medclass.evaluation.evaluate import bootstrap_settings, predictions_csv, weakness
from medclass.evaluation.result import EvaluationResult
from medclass.evaluation.subgroups import split_subgroups
from medclass.inference.package import ModelPackage, load_package
from medclass.io import atomic_write_json, atomic_write_text
from medclass.metrics import predicted_labels, summary_metrics
from medclass.run_dir import EvaluationDir
from medclass.tasks import Task, scores_from_logits
from medclass.wording import file_slug


def package_scores(package: ModelPackage, split: ImageSplit, task: Task, batch: int = 256) -> np.ndarray:
    """Class probabilities of every image of ``split`` (uint8 (H, W, C) images, resized by the package)."""
    scores = []
    for start in range(0, len(split), batch):
        rows = range(start, min(start + batch, len(split)))
        images = torch.from_numpy(np.stack([split.image(i) for i in rows])).permute(0, 3, 1, 2).contiguous()
        scores.append(scores_from_logits(package.logits(images).float(), task).numpy())
    return np.concatenate(scores).astype(np.float64)


def assess_package(
    package: ModelPackage, dataset: LabelledImages, split: str = "test", settings: EvaluationConfig | None = None,
    seed: int = 0,
) -> EvaluationResult:  # fmt: skip
    """The package's metrics on one split of ``dataset`` (the files are not written: see :func:`evaluate_package`)."""
    settings = settings or EvaluationConfig()
    check_split(split, dataset.splits)
    if package.classes != dataset.classes or package.task != dataset.task:
        raise UserError(
            f"{package.path} was trained on the {package.task} classes {package.classes}, but {dataset.name} has the "
            f"{dataset.task} classes {dataset.classes}: a package can only be evaluated on data with its classes"
        )
    part = dataset.splits[split]
    task = dataset.task
    scores = package_scores(package, part, task)
    targets = np.asarray(part.labels)
    metrics = summary_metrics(targets, scores, task, None, settings.calibration_bins)
    intervals = Intervals()
    y_pred = predicted_labels(scores, task)
    per_class = per_class_table(targets, scores, y_pred, task, dataset.classes)
    if settings.bootstrap:
        intervals = headline_intervals(targets, scores, task, None, settings.bootstrap, settings.confidence, seed)
        class_intervals = per_class_intervals(
            targets, scores, y_pred, task, len(dataset.classes), settings.bootstrap, settings.confidence, seed
        )
        for row, row_intervals in zip(per_class, class_intervals, strict=True):
            row["ci"] = row_intervals
    result = EvaluationResult(
        run_dir=package.path, split=split, checkpoint="package", metrics=metrics, n_samples=len(targets), epoch=None,
        task=task, intervals=intervals.bounds, undefined_intervals=intervals.undefined,
        interval_methods=intervals.methods, per_class=per_class,
        extra={
            "dataset": dataset.name, "model": str(package.path), "classes": dataset.classes,
            "split_source": dataset.source.get("split"), "ensemble": "ensemble" in package.manifest,
            "decision": "argmax (binary: P > 0.5); no temperature or threshold is fitted for a package",
            "warnings": list(dataset.warnings),
            "weak": weakness(targets, metrics, intervals.bounds, task, dataset.classes),
            "bootstrap": bootstrap_settings(settings, seed),
        },
    )  # fmt: skip
    result.extra["scores"] = scores  # for callers in this process (not written)
    return result


def evaluate_package(
    path: str | Path, data: LoaderFields, split: str = "test", settings: EvaluationConfig | None = None,
    out: Path | None = None, seed: int = 0,
) -> EvaluationResult:  # fmt: skip
    """Load the package and the data, score the split, and write metrics.json and predictions.csv to ``out``
    (default: beside the package, ``evaluation_<dataset>_<split>/``)."""
    package = load_package(path)
    dataset = load_dataset(data)
    result = assess_package(package, dataset, split, settings, seed)
    scores = result.extra.pop("scores")
    if settings is not None and settings.subgroups:
        targets = np.asarray(dataset.splits[split].labels)
        result.extra["subgroups"] = split_subgroups(
            settings, data, dataset, split, targets, scores, predicted_labels(scores, dataset.task), None, seed
        )
    folder = (
        EvaluationDir(out)
        if out is not None
        else EvaluationDir.default(package.path, file_slug(dataset.name, "data"), split)
    )
    folder.path.mkdir(parents=True, exist_ok=True)
    result.files["metrics"] = atomic_write_json(folder.metrics_path, result.as_dict())
    targets = np.asarray(dataset.splits[split].labels)
    text = predictions_csv(
        targets, scores, dataset.classes, dataset.task, dataset.sources(split), dataset.split_group_keys(split)
    )
    result.files["predictions"] = atomic_write_text(folder.predictions_path, text)
    return result
