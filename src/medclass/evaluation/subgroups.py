"""Results per subgroup (sex, age band, site, device): for every value of each attribute the user names, its
support, the headline metrics and the per-class sensitivity/specificity, each with a bootstrap interval, and the
largest gap between the subgroups of an attribute. A subgroup is never dropped: a small one is reported with its
count, flagged small, and its (wide) intervals; images without a value form a subgroup "(missing)" of their own,
which is left out of the gaps.

The attribute values come from the data layer (CSV columns or DICOM headers); only the values of the attributes
named in ``evaluation.subgroups`` are written, and identifying attributes are refused by the config."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from medclass.config.data import CsvData, FolderData, LoaderFields
from medclass.config.reporting import EvaluationConfig, Subgroup
from medclass.data.dataset import LabelledImages
from medclass.data.dicom import age_in_years
from medclass.data.sources.files import file_attributes
from medclass.errors import UserError
from medclass.evaluation.bootstrap import headline_intervals
from medclass.evaluation.clinical import per_class_intervals, per_class_table
from medclass.metrics import headline_metrics, metric_label
from medclass.tasks import Task, positive_class_index

MISSING = "(missing)"
SMALL = 30  # fewer images than this: flagged small (its intervals are wide, its point values unreliable)
MAX_VALUES = 50  # more distinct values than this is an identifier or a free-text column, not a subgroup
CLASS_COLUMNS = ("support", "sensitivity", "specificity")


def band_labels(bins: list[float]) -> list[str]:
    """The bands of ``bins`` in order: below the first edge, [a, b) for each pair, at or above the last edge."""
    edges = [f"{edge:g}" for edge in bins]
    return [f"<{edges[0]}", *(f"{a}-{b}" for a, b in zip(edges, edges[1:], strict=False)), f">={edges[-1]}"]


def band_of(value: str | None, bins: list[float]) -> str:
    """The band [a, b) of a numeric value (a DICOM age such as 045Y counts in years); MISSING when not a number."""
    number = age_in_years(value) if value is not None else None
    if number is None:
        return MISSING
    return band_labels(bins)[int(np.searchsorted(bins, number, side="right"))]


def subgroup_values(spec: Subgroup, raw: list[str | None]) -> list[str]:
    """Each image's subgroup under ``spec``: its value, its band, or MISSING."""
    if spec.bins:
        return [band_of(value, spec.bins) for value in raw]
    return [value if value else MISSING for value in raw]


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _one_subgroup(
    targets: np.ndarray, scores: np.ndarray, y_pred: np.ndarray, task: Task, classes: list[str],
    thresholds: np.ndarray | None, resamples: int, confidence: float, seed: int,
) -> dict[str, Any]:  # fmt: skip
    metrics = {k: _finite(v) for k, v in headline_metrics(targets, scores, task, thresholds).items()}
    intervals: dict[str, list[float] | None] = {}
    class_intervals: list[dict[str, Any]] = [{} for _ in classes]
    if resamples and len(targets) > 1:
        intervals = headline_intervals(targets, scores, task, thresholds, resamples, confidence, seed).as_json()
        class_intervals = per_class_intervals(targets, scores, y_pred, task, len(classes), resamples, confidence, seed)
    table = per_class_table(targets, scores, y_pred, task, classes)
    per_class = []
    for row, ci in zip(table, class_intervals, strict=True):
        entry: dict[str, Any] = {"class": row["class"], **{k: row[k] for k in CLASS_COLUMNS}}
        entry["ci"] = {k: ci.get(k) for k in ("sensitivity", "specificity")}
        per_class.append(entry)
    return {"n": len(targets), "small": len(targets) < SMALL, "metrics": metrics, "intervals": intervals,
            "per_class": per_class}  # fmt: skip


def _gaps(groups: list[dict[str, Any]], classes: list[str]) -> dict[str, dict[str, Any]]:
    """Per measure (headline metrics, then sensitivity/specificity of each of ``classes``): the highest and the
    lowest subgroup and the difference, over the subgroups that have a value (MISSING left out)."""
    measures: dict[str, list[tuple[float, str, int]]] = {}
    for group in groups:
        if group["value"] == MISSING:
            continue
        for name, value in group["metrics"].items():
            if value is not None:
                measures.setdefault(name, []).append((value, group["value"], group["n"]))
        for row in group["per_class"]:
            if row["class"] not in classes:
                continue
            for column in ("sensitivity", "specificity"):
                if row[column] is not None:
                    measures.setdefault(f"{column}:{row['class']}", []).append(
                        (row[column], group["value"], group["n"])
                    )
    gaps = {}
    for name, values in measures.items():
        if len(values) < 2:
            continue
        high, low = max(values), min(values)
        gaps[name] = {"gap": high[0] - low[0], "highest": {"subgroup": high[1], "value": high[0], "n": high[2]},
                      "lowest": {"subgroup": low[1], "value": low[0], "n": low[2]}}  # fmt: skip
    return gaps


def subgroup_results(
    specs: list[Subgroup], attributes: dict[str, list[str | None]], targets: np.ndarray, scores: np.ndarray,
    y_pred: np.ndarray, task: Task, classes: list[str], thresholds: np.ndarray | None, resamples: int,
    confidence: float, seed: int, positive: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One entry per attribute: its subgroups (largest first, MISSING last) with their numbers, and the gaps. A
    binary task's gaps in sensitivity and specificity are those of its ``positive`` class only (the other class's
    are the same numbers swapped)."""
    results = []
    for spec in specs:
        values = subgroup_values(spec, attributes[spec.column])
        counts = Counter(values)
        if len(counts) > MAX_VALUES:
            raise UserError(
                f"evaluation.subgroups: {spec.column!r} has {len(counts)} distinct values in this split (more than "
                f"{MAX_VALUES}): that is an identifier or free text, not a subgroup; give bins for a number, or "
                "a coarser column"
            )
        if spec.bins:  # bands in their numeric order
            order = [band for band in band_labels(spec.bins) if band in counts] + (
                [MISSING] if MISSING in counts else []
            )
        else:
            order = sorted(counts, key=lambda v: (v == MISSING, -counts[v], v))
        groups = []
        array = np.array(values, dtype=object)
        for value in order:
            rows = np.flatnonzero(array == value)
            group = _one_subgroup(
                targets[rows], scores[rows], y_pred[rows], task, classes, thresholds, resamples, confidence, seed
            )
            groups.append({"value": value, **group})
        gaps = _gaps(groups, [positive] if positive else classes)
        largest = max(gaps.items(), key=lambda item: item[1]["gap"], default=None)
        results.append({
            "name": spec.label, "column": spec.column, **({"bins": spec.bins} if spec.bins else {}),
            "subgroups": groups, "gaps": gaps,
            "largest_gap": {"measure": largest[0], **largest[1]} if largest else None,
        })  # fmt: skip
    return results


def split_attributes(
    data: LoaderFields, dataset: LabelledImages, split: str, columns: list[str]
) -> dict[str, list[str | None]]:
    """The values of ``columns`` for every image of ``split`` (label-CSV columns or DICOM headers)."""
    files = dataset.splits[split].files
    if files is None or not isinstance(data, (CsvData, FolderData)):
        raise UserError(
            f"evaluation.subgroups needs image files with a label CSV or DICOM headers; the {data.source} source "
            "has neither: remove evaluation.subgroups, or give the data as a folder or CSV source"
        )
    return file_attributes(data, files, list(dict.fromkeys(columns)))


def split_subgroups(
    settings: EvaluationConfig, data: LoaderFields, dataset: LabelledImages, split: str, targets: np.ndarray,
    scores: np.ndarray, y_pred: np.ndarray, thresholds: np.ndarray | None, seed: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """:func:`subgroup_results` for the subgroups ``settings`` name, on one split of ``dataset``."""
    attributes = split_attributes(data, dataset, split, [s.column for s in settings.subgroups])
    positive = None
    if dataset.task == "binary":
        positive = dataset.classes[positive_class_index(dataset.classes, settings.positive_class)]
    return subgroup_results(
        settings.subgroups, attributes, targets, scores, y_pred, dataset.task, dataset.classes, thresholds,
        settings.bootstrap, settings.confidence, seed, positive,
    )  # fmt: skip


def gap_sentence(entry: dict[str, Any]) -> str:
    """The largest gap of one attribute, in words."""
    largest = entry.get("largest_gap")
    if not largest:
        return f"{entry['name']}: fewer than two subgroups with a value; no gap to report."
    kind, _, class_ = largest["measure"].partition(":")
    measure = f"{kind} of {class_}" if class_ else metric_label(kind)
    high, low = largest["highest"], largest["lowest"]
    small = [g["subgroup"] for g in (high, low) if g["n"] < SMALL]
    caution = f" ({' and '.join(small)}: fewer than {SMALL} images, so the gap is uncertain)" if small else ""
    return (
        f"{entry['name']}: the largest gap is in {measure}, {largest['gap']:.3f} between {high['subgroup']} "
        f"({high['value']:.3f}, n={high['n']}) and {low['subgroup']} ({low['value']:.3f}, n={low['n']}){caution}."
    )
