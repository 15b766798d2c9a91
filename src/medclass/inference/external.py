"""External validation: ``medclass evaluate MODEL --external NAME=PATH``.

Every labelled, readable image of the external set is scored by the model (a run directory, a package, an ensemble
or an .onnx file), decoded as the model reads files. Class names are matched by name. Copies of the model's
training or validation images (identical decoded pixels: the same file, or the same pixels saved again) are named
and left out of the metrics unless ``keep_duplicates``; copies inside the external set are reported. The results
(metrics with intervals, the internal test split side by side with the differences, calibration, the validation
threshold applied, the gate's pass rate) go to ``external/NAME/`` of the run (or beside the package) and into the
run's report.html."""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.config import EvaluationConfig
from medclass.data import load_dataset
from medclass.data.checks import (
    NEAR_LIMIT,
    NEAR_METHOD,
    find_near,
    label_names,
    near_pairs,
    perceptual_hashes,
    pixel_hashes,
)
from medclass.data.dataset import LabelledImages
from medclass.data.external import Decoding, ExternalSet, load_external
from medclass.data.sources.files import file_attributes
from medclass.errors import DataError
from medclass.evaluation.bootstrap import Intervals, headline_intervals
from medclass.evaluation.clinical import per_class_intervals, per_class_table
from medclass.evaluation.evaluate import (
    bootstrap_settings,
    positive_summary,
    predictions_csv,
    read_predictions,
    weakness,
)
from medclass.evaluation.external import (
    Scored,
    calibration_summary,
    compare_sets,
    refresh_run_report,
    write_page,
)
from medclass.evaluation.plots import copy_caption, plot_copies
from medclass.evaluation.report import COPY_GROUPS
from medclass.evaluation.result import EvaluationResult
from medclass.evaluation.subgroups import subgroup_results
from medclass.inference.gatekeeping import judge
from medclass.inference.predictor import Predictor, load_predictor
from medclass.io import atomic_write_json, atomic_write_text, read_json
from medclass.metrics import predicted_labels, summary_metrics
from medclass.run_dir import ExternalDir, RunDir
from medclass.tasks import positive_class_index, scores_from_logits

log = logging.getLogger("medclass")
BATCH = 256
REFERENCE_SPLITS = ("train", "val")  # what a model has seen: its copies in an external set are not external


@dataclass
class ExternalResult:
    evaluation: EvaluationResult  # the external set's own numbers (console table, notes)
    summary: dict[str, Any]  # everything, as external/NAME/metrics.json holds it
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)


def match_classes(model_classes: list[str], set_classes: list[str], location: str) -> tuple[dict[str, int], str]:
    """External class name -> model class index (exact, else ignoring case), and what to say about it. A class
    the model does not know is an error that lists both sets; a subset of the model's classes is allowed."""
    exact = {c: model_classes.index(c) for c in set_classes if c in model_classes}
    folded = {c.lower(): i for i, c in enumerate(model_classes)}
    mapping, by_case = dict(exact), []
    for name in set_classes:
        if (
            name not in mapping
            and name.lower() in folded
            and list(map(str.lower, model_classes)).count(name.lower()) == 1
        ):
            mapping[name] = folded[name.lower()]
            by_case.append(name)
    unknown = [c for c in set_classes if c not in mapping]
    if unknown:
        raise DataError(
            f"--external {location}: its classes {', '.join(set_classes)} do not match the model's classes "
            f"{', '.join(model_classes)} (unknown to the model: {', '.join(unknown)}); rename the folders or labels"
        )
    notes = []
    if by_case:
        notes.append(f"classes matched ignoring case: {', '.join(by_case)}")
    missing = [c for i, c in enumerate(model_classes) if i not in mapping.values()]
    if missing:
        notes.append(
            f"the external set has {len(set_classes)} of the model's {len(model_classes)} classes (none of "
            f"{', '.join(missing)}): measures that need those classes are undefined"
        )
    said = "; ".join(notes)
    return mapping, (said[0].upper() + said[1:] + ".") if notes else "Same classes as the model."


def _targets(external: ExternalSet, mapping: dict[str, int], n_classes: int) -> np.ndarray:
    labels = np.asarray(external.images.labels)
    if labels.ndim == 1:
        lookup = np.array([mapping[c] for c in external.classes], dtype=np.int64)
        return lookup[labels]
    targets = np.zeros((len(labels), n_classes), dtype=np.float32)
    for j, name in enumerate(external.classes):
        targets[:, mapping[name]] = labels[:, j]
    return targets


def reference_runs(predictor: Predictor, model: Path) -> tuple[list[RunDir], str]:
    """The run directories whose training and validation images the model has seen (the run itself, a package's
    source run, an ensemble's members), and what to say when they cannot be found."""
    if RunDir.is_run_dir(model):
        return [RunDir(model)], ""
    source = predictor.manifest.get("source") or {}
    named = [source["run_dir"]] if source.get("run_dir") else list(source.get("members") or [])
    for member in (predictor.manifest.get("ensemble") or {}).get("members", []):
        run_dir = (member.get("source") or {}).get("run_dir")
        if run_dir and run_dir not in named:
            named.append(run_dir)
    found = [RunDir(p) for p in named if RunDir.is_run_dir(p)]
    if not named:
        return [], "the model does not say which run trained it, so copies of its training images cannot be looked for"
    if len(found) < len(named):
        lost = [p for p in named if not RunDir.is_run_dir(p)]
        return (
            found,
            f"the run(s) that trained it are not here ({', '.join(lost)}): copies of their images are not looked for",
        )
    return found, ""


@dataclass
class Reference:
    """What the model has seen, decoded as it trained: pixel hash -> [(split:name, label)], every image's
    perceptual hash with its (split:name, label), and where each "split:name" is (to show it)."""

    exact: dict[str, list[tuple[str, str]]]
    near_bits: np.ndarray
    near_entries: list[tuple[str, str]]
    datasets: list[LabelledImages] = field(default_factory=list)
    where: dict[str, tuple[int, str, int]] = field(default_factory=dict)  # split:name -> (dataset, split, index)

    def image(self, member: str) -> np.ndarray | None:
        found = self.where.get(member)
        return None if found is None else self.datasets[found[0]].splits[found[1]].image(found[2])


def _reference(runs: list[RunDir]) -> Reference:
    reference = Reference(defaultdict(list), np.zeros((0, 64), bool), [])
    bits = []
    for run in runs:
        dataset = load_dataset(run.load_config().data)
        reference.datasets.append(dataset)
        for split_name, split in dataset.splits.items():
            names = split.files or [f"{dataset.name}:{split_name}[{i}]" for i in range(len(split))]
            labels = label_names(split.labels, dataset.classes)
            for start in range(0, len(split), 1024):
                chunk = np.stack([split.image(i) for i in range(start, min(start + 1024, len(split)))])
                for offset, key in enumerate(pixel_hashes(chunk)):
                    entry = (f"{split_name}:{names[start + offset]}", labels[start + offset])
                    reference.where.setdefault(entry[0], (len(reference.datasets) - 1, split_name, start + offset))
                    if entry not in reference.exact[key]:
                        reference.exact[key].append(entry)
                    if split_name in REFERENCE_SPLITS:
                        reference.near_entries.append(entry)
                if split_name in REFERENCE_SPLITS:
                    bits.append(perceptual_hashes(chunk, chunk.shape[1]))
    if bits:
        reference.near_bits = np.concatenate(bits)
    return reference


def _score(
    predictor: Predictor, external: ExternalSet, gate: bool
) -> tuple[np.ndarray, list[bool] | None, dict[str, float] | None]:
    """(class probabilities (uncalibrated), per image whether the gate accepts it, the gate's shares)."""
    scores, accepted, foreign, quality = [], [], [], []
    sides = external.short_sides() if gate else []
    for start in range(0, len(external), BATCH):
        rows = range(start, min(start + BATCH, len(external)))
        batch = np.ascontiguousarray(np.stack([external.images.image(i) for i in rows]).transpose(0, 3, 1, 2))
        if gate:
            logits, ood = predictor.outputs(batch)
            assert ood is not None
            for verdict in judge(predictor.gate, batch, ood, sides[start : start + len(rows)]):
                accepted.append(verdict.accepted)
                foreign.append(not verdict.ood_score <= 1.0)
                quality.append(verdict.accepted or verdict.problems == ["looks unlike the training images"])
        else:
            logits = predictor.logits(batch)
        scores.append(
            scores_from_logits(torch.from_numpy(np.asarray(logits, dtype=np.float32)), predictor.task).numpy()
        )
    probabilities = np.concatenate(scores).astype(np.float64)
    if not np.isfinite(probabilities).all():
        raise DataError(f"{predictor.description} gives non-finite scores for images of the external set")
    if not gate:
        return probabilities, None, None
    shares = {"accepted": float(np.mean(accepted)), "in_distribution": 1 - float(np.mean(foreign)),
              "quality_passed": float(np.mean(quality))}  # fmt: skip
    return probabilities, accepted, shares


def evaluate_external(
    model: str | Path, spec: str, keep_duplicates: bool = False, settings: EvaluationConfig | None = None,
    out: Path | None = None,
) -> ExternalResult:  # fmt: skip
    """Score every labelled image of ``spec`` with ``model`` and write ``external/NAME/`` (see the module)."""
    model = Path(model)
    predictor = load_predictor(model)
    run = RunDir(model) if RunDir.is_run_dir(model) else None
    config = run.load_config() if run is not None else None
    settings = settings or (config.evaluation if config is not None else EvaluationConfig())
    seed = config.seed if config is not None else 0
    pre = predictor.preprocessing
    decoding = Decoding(int(pre["decode_size"]), str(pre["resize"]), int(pre["channels"]),
                        str(pre.get("dicom_frame", "middle")))  # fmt: skip
    cache = getattr(config.data, "cache_dir", None) if config is not None else None
    external = load_external(spec, decoding, cache)
    classes, task = predictor.classes, predictor.task
    if task == "multilabel" and len(np.asarray(external.images.labels).shape) == 1:
        raise DataError(f"--external {external.location}: the model is multi-label; give a CSV with several labels")
    mapping, class_note = match_classes(classes, external.classes, external.location)
    targets = _targets(external, mapping, len(classes))
    sources = external.images.files or []

    # Copies of what the model has seen, and copies inside the set.
    runs, not_checked = reference_runs(predictor, model)
    reference = _reference(runs) if runs else Reference({}, np.zeros((0, 64), bool), [])
    decoded = np.stack([external.images.image(i) for i in range(len(external))])
    hashes = pixel_hashes(decoded)
    near_to: dict[int, list[tuple[str, str]]] = defaultdict(list)
    within_near: list[list[int]] = []
    if len(external) <= NEAR_LIMIT:
        bits = perceptual_hashes(decoded, decoded.shape[1])
        within_near = find_near(near_pairs(bits), hashes, sources, ["external"] * len(external))[0]
        for i, j in near_pairs(bits, reference.near_bits):
            near_to[i].append(reference.near_entries[j])
    ext_labels = label_names(np.asarray(external.images.labels), external.classes)
    of_training, in_test, conflicts = [], 0, []
    duplicate = np.zeros(len(external), dtype=bool)
    for i, key in enumerate(hashes):
        seen = [(w, label) for w, label in reference.exact.get(key, []) if w.split(":", 1)[0] in REFERENCE_SPLITS]
        kind = "identical"
        if not seen and near_to.get(i):
            seen, kind = near_to[i], "near-duplicate"
        if seen:
            duplicate[i] = True
            of_training.append({"image": sources[i], "matches": [where for where, _ in seen], "kind": kind, "row": i})
            conflicts += [f"{sources[i]}={ext_labels[i]} = {where}={label}" for where, label in seen
                          if label.lower() != ext_labels[i].lower()]  # fmt: skip
        elif any(where.startswith("test:") for where, _ in reference.exact.get(key, [])):
            in_test += 1
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(hashes):
        groups[key].append(i)
    within_rows = [members for members in groups.values() if len(members) > 1]
    within = [[sources[i] for i in members] for members in within_rows]
    kept = np.ones(len(external), dtype=bool) if keep_duplicates else ~duplicate
    if not kept.any():
        raise DataError(
            f"--external {external.location}: every one of its {len(external)} images is a copy of a training or "
            "validation image; there is nothing external to score (--keep-duplicates scores them anyway)"
        )

    gate_on = bool(predictor.gate)
    scores, accepted, gate_shares = _score(predictor, external, gate_on)
    scored = Scored(targets[kept], scores[kept], task)
    positive = None
    if task == "binary":
        positive = int(
            predictor.calibration.get("positive_index", positive_class_index(classes, settings.positive_class))
        )
    threshold = predictor.calibration.get("threshold") if positive is not None else None

    evaluation = _evaluation(predictor, external, scored, positive, settings, seed, model)
    if settings.subgroups:
        evaluation.extra["subgroups"] = _subgroups(external, kept, scored, settings, positive, seed, classes)
    internal, internal_note = _internal(run, classes, task)
    side = compare_sets(internal, scored, classes, positive, threshold, settings.bootstrap or 1000,
                        settings.confidence, seed)  # fmt: skip
    n_dup = int(duplicate.sum())
    summary_text = _duplicate_sentence(len(external), n_dup, keep_duplicates, in_test, within, not_checked, runs,
                                       sum(1 for d in of_training if d["kind"] == "near-duplicate"),
                                       len(within_near))  # fmt: skip
    warnings = list(evaluation.extra.get("warnings", []))
    if conflicts:
        warnings.append(f"LABEL CONFLICT: {len(conflicts)} copies of training images carry another label in the "
                        f"external set ({'; '.join(conflicts[:3])})")  # fmt: skip
    summary: dict[str, Any] = {
        "name": external.name,
        "location": external.location,
        "location_note": f"{external.location} ({external.layout})",
        "model": predictor.description,
        "classes": classes,
        "set_classes": external.classes,
        "class_note": class_note,
        "images": {
            "found": len(external) + len(external.skipped),
            "readable": len(external),
            "scored": int(kept.sum()),
            "left_out": 0 if keep_duplicates else n_dup,
            "skipped": len(external.skipped),
        },  # fmt: skip
        "duplicates": {
            "method": "identical decoded pixels at the model's input (the same file, or the same pixels saved again); "
            f"near-duplicates: {NEAR_METHOD}",
            "summary": summary_text,
            "of_training": [{k: v for k, v in d.items() if k != "row"} for d in of_training],
            "kept": keep_duplicates,
            "within_set": within,
            "within_near": [[sources[i] for i in members] for members in within_near],
            "also_in_internal_test": in_test,
            "checked_against": [str(r.path) for r in runs],
        },  # fmt: skip
        **{k: v for k, v in evaluation.as_dict().items() if k not in ("split", "checkpoint", "epoch", "warnings")},
        "operating_point": (
            {
                "threshold": threshold,
                "positive_class": classes[positive],
                "rule": predictor.calibration.get("threshold_rule"),
                "chosen_on": "val",
            }
            if threshold is not None and positive is not None
            else None
        ),  # fmt: skip
        "calibration": calibration_summary(scored, positive),
        "calibration_internal": calibration_summary(internal, positive) if internal is not None else None,
        "gate": (
            {**gate_shares, "validation_accepted": (predictor.gate.get("val") or {}).get("accepted")}
            if gate_shares is not None
            else None
        ),  # fmt: skip
        "internal": {"n": len(internal) if internal is not None else None, "note": internal_note},
        "side_by_side": [row.as_dict() for row in side],
        "warnings": warnings,
    }
    where = ExternalDir(out) if out is not None else (
        run.external_dir(external.name) if run is not None
        else ExternalDir(model.resolve().parent / "external" / external.name)
    )  # fmt: skip
    where.path.mkdir(parents=True, exist_ok=True)
    result = ExternalResult(evaluation, summary, where.path)
    result.files["metrics"] = atomic_write_json(where.metrics_path, summary)
    result.files["predictions"] = atomic_write_text(
        where.predictions_path,
        _predictions(
            targets, scores, classes, task, sources, duplicate, of_training, keep_duplicates, accepted
        ),  # fmt: skip
    )
    if external.skipped:
        result.files["skipped"] = atomic_write_text(where.skipped_path, _skipped_csv(external.skipped))
    thumbnails = _copy_thumbnails(decoded, sources, ext_labels, of_training, within_rows, within_near, reference)
    title = "Copies of the model's images in the external set, and copies within it"
    if plot_copies(where.copies_path, thumbnails, title) is not None:
        result.files["copies"] = where.copies_path
    else:
        where.copies_path.unlink(missing_ok=True)  # from an earlier evaluation of a set since changed
    result.files["html"] = write_page(where, summary)
    if run is not None:
        report = run.report_dir("test", "best") / "report.html"
        stored = [(read_json(p), ExternalDir(p.parent)) for p in run.external_results()]
        if refresh_run_report(report, stored):
            result.files["run_report"] = report
    return result


def _evaluation(
    predictor: Predictor, external: ExternalSet, scored: Scored, positive: int | None, settings: EvaluationConfig,
    seed: int, model: Path,
) -> EvaluationResult:  # fmt: skip
    """The external set's own numbers, as an evaluation gives them (metrics, intervals, per-class table)."""
    task, classes = scored.task, predictor.classes
    metrics = {k: v for k, v in summary_metrics(scored.targets, scored.scores, task, None,
                                                 settings.calibration_bins).items() if np.isfinite(v)}  # fmt: skip
    y_pred = predicted_labels(scored.scores, task)
    per_class = per_class_table(scored.targets, scored.scores, y_pred, task, classes)
    intervals = Intervals()
    if settings.bootstrap:
        intervals = headline_intervals(scored.targets, scored.scores, task, None, settings.bootstrap,
                                       settings.confidence, seed)  # fmt: skip
        for row, ci in zip(
            per_class,
            per_class_intervals(
                scored.targets, scored.scores, y_pred, task, len(classes), settings.bootstrap, settings.confidence, seed
            ),
            strict=True,
        ):
            row["ci"] = ci  # fmt: skip
    for name in list(intervals.methods):
        if name not in metrics:  # no value (one class only): nothing to give an interval of
            intervals.methods.pop(name)
            intervals.undefined.pop(name, None)
    extra: dict[str, Any] = {
        "dataset": external.name, "classes": classes, "model": str(model),
        "weak": weakness(scored.targets, metrics, intervals.bounds, task, classes) if len(scored) else [],
        "bootstrap": bootstrap_settings(settings, seed), "warnings": [],
        "decision": "argmax (binary: P > 0.5); the threshold chosen on validation is in the side-by-side table",
    }  # fmt: skip
    if positive is not None and settings.bootstrap:
        extra["positive_class"] = positive_summary(scored.targets, scored.scores, per_class, positive, classes,
                                                   settings, seed)  # fmt: skip
    return EvaluationResult(
        run_dir=model, split=f"external {external.name}", checkpoint="external", metrics=metrics,
        n_samples=len(scored), epoch=None, task=task, intervals=intervals.bounds,
        undefined_intervals=intervals.undefined, interval_methods=intervals.methods, per_class=per_class, extra=extra,
    )  # fmt: skip


def _subgroups(
    external: ExternalSet, kept: np.ndarray, scored: Scored, settings: EvaluationConfig, positive: int | None,
    seed: int, classes: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    """Results by subgroup on the external set (label-CSV columns or DICOM header keywords of its files)."""
    if external.config is None:
        raise DataError(
            f"--external {external.location}: subgroups need image files with a label CSV or DICOM headers; this set "
            "is an array dataset"
        )
    files = [f for f, keep in zip(external.images.files or [], kept, strict=True) if keep]
    attributes = file_attributes(external.config, files, list(dict.fromkeys(s.column for s in settings.subgroups)))
    return subgroup_results(
        settings.subgroups, attributes, scored.targets, scored.scores, predicted_labels(scored.scores, scored.task),
        scored.task, classes, None, settings.bootstrap, settings.confidence, seed,
        classes[positive] if positive is not None else None,
    )  # fmt: skip


def _internal(run: RunDir | None, classes: list[str], task: str) -> tuple[Scored | None, str]:
    if run is None:
        return None, "Internal test results: give the run directory (not its package) to see them side by side."
    path = run.predictions_path("test")
    if not path.is_file():
        return None, f"Internal test results: {path.name} is missing; run `medclass evaluate {run.path}` first."
    targets, scores, _ = read_predictions(path, classes, task)  # type: ignore[arg-type]
    return Scored(targets, scores, task), (
        f"Internal: the run's own test split ({len(targets):,} images, best checkpoint, {path.name})."
    )


def _copy_thumbnails(
    decoded: np.ndarray, sources: list[str], labels: list[str], of_training: list[dict[str, Any]],
    within: list[list[int]], within_near: list[list[int]], reference: Reference, limit: int = COPY_GROUPS,
) -> list[list[tuple[np.ndarray, str]]]:  # fmt: skip
    """Thumbnails for copies.png: each external image that copies training or validation images beside (up to
    three of) them, then the groups of copies within the set; at most ``limit`` groups."""
    entries = {entry[0]: entry[1] for members in reference.exact.values() for entry in members}
    groups: list[list[tuple[np.ndarray, str]]] = []
    for item in of_training[:limit]:
        sign, i = "≈" if item["kind"] == "near-duplicate" else "=", item["row"]
        group = [(decoded[i], copy_caption(len(groups) + 1, sign, "external", sources[i], labels[i]))]
        for member in item["matches"][:3]:
            image = reference.image(member)
            if image is not None:
                split, _, name = member.partition(":")
                group.append((image, copy_caption(len(groups) + 1, sign, split, name, entries.get(member, ""))))
        groups.append(group)
    for sign, rows in ([("=", g) for g in within] + [("≈", g) for g in within_near])[: limit - len(groups)]:
        k = len(groups) + 1
        groups.append([(decoded[i], copy_caption(k, sign, "external", sources[i], labels[i])) for i in rows])
    return groups


def _duplicate_sentence(
    n: int, n_dup: int, kept: bool, in_test: int, within: list[list[str]], not_checked: str, runs: list[RunDir],
    near: int, within_near: int = 0,
) -> str:  # fmt: skip
    if not runs:
        said = f"Not checked against the training data: {not_checked}."
    elif n_dup:
        said = f"{n_dup} of the {n:,} images are copies of the model's training or validation images; " + (
            "they are kept in the metrics (--keep-duplicates)." if kept else "they are left out of the metrics."
        )
    else:
        said = f"None of the {n:,} images is a copy of the model's training or validation images."
    if near:
        said += (f" Of them {near} are near-duplicates (resized or re-encoded copies)"
                 + (", the others identical." if near < n_dup else "."))  # fmt: skip
    if runs and not_checked:
        said += f" {not_checked[0].upper()}{not_checked[1:]}."
    if in_test:
        said += f" {in_test} are images of the internal test split (kept: the model never trained on them)."
    if within:
        said += f" {len(within)} group(s) of identical images within the external set ({sum(map(len, within))} images)."
    if within_near:
        said += f" {within_near} group(s) of near-duplicates within the external set (both scored)."
    return said


def _predictions(
    targets: np.ndarray, scores: np.ndarray, classes: list[str], task: str, sources: list[str],
    duplicate: np.ndarray, of_training: list[dict[str, Any]], kept: bool, accepted: list[bool] | None,
) -> str:  # fmt: skip
    """Every readable image: the evaluation's columns, then whether it was left out (a copy of which training
    image) and, with a gate, whether the gate accepts it."""
    text = predictions_csv(targets, scores, classes, task, sources)  # type: ignore[arg-type]
    matches = {d["image"]: " ".join(d["matches"]) for d in of_training}
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*rows[0], "copy_of", "in_metrics", *(["gate_accepts"] if accepted is not None else [])])
    for i, row in enumerate(rows[1:]):
        writer.writerow([*row, matches.get(sources[i], ""), "yes" if kept or not duplicate[i] else "no",
                         *(["yes" if accepted[i] else "no"] if accepted is not None else [])])  # fmt: skip
    return out.getvalue()


def _skipped_csv(skipped: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "reason"])
    writer.writerows([s["file"], s["reason"]] for s in skipped)
    return out.getvalue()
