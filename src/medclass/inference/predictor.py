"""Predict on image files with a model package, a run directory or an exported ONNX file, all behind one small
interface: uint8 image batches in, logits out, plus the classes, task, preprocessing and calibration."""

from __future__ import annotations

import glob
import json
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from medclass.config.data import IMAGE_EXTENSIONS
from medclass.data.files import is_image_file
from medclass.data.images import DECODE_ERRORS, load_image_and_size
from medclass.errors import ModelError, UserError
from medclass.inference.archive import csv_header, csv_row
from medclass.inference.gatekeeping import check_mode, judge
from medclass.inference.locate import REGISTERED, check_model_spec, is_package
from medclass.inference.onnx_export import OnnxPredictor
from medclass.inference.package import ManifestView, load_package, run_package
from medclass.inference.registry import fetch_registered
from medclass.io import atomic_write_text
from medclass.metrics import decide_positive
from medclass.run_dir import RunDir
from medclass.tasks import Task, scores_from_logits
from medclass.wording import rule_words


class Predictor(Protocol):
    classes: list[str]
    task: Task
    preprocessing: dict[str, Any]
    calibration: dict[str, Any]
    gate: dict[str, Any]
    manifest: dict[str, Any]
    description: str

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, C, H, W) at the decode size -> float logits (B, classes)."""
        ...

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, out-of-distribution scores (B,) or None for a model without a gate), one pass."""
        ...


@dataclass
class TorchPredictor(ManifestView):
    package: Any  # ModelPackage
    description: str

    def __post_init__(self) -> None:
        self.manifest = self.package.manifest

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.package.logits(_tensor(images)).float().numpy()

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, ood = self.package.outputs(_tensor(images))
        return logits.float().numpy(), None if ood is None else ood.float().numpy()


def _tensor(images: np.ndarray) -> torch.Tensor:
    # Decoded images can be read-only views of the decoder's buffer; torch warns about those (and would share
    # them). A copy of a uint8 batch costs little next to the network.
    return torch.from_numpy(np.ascontiguousarray(images) if images.flags.writeable else np.array(images, order="C"))


def load_predictor(spec: str | Path, tracking_uri: str | None = None) -> Predictor:
    """A package directory, a run directory (its packaged best checkpoint, made on first use), an .onnx file, or a
    registered MLflow model (``models:/<name>/<version>``)."""
    check_model_spec(spec)
    if str(spec).startswith(REGISTERED):
        # The package is read into memory whole, so its download goes once loaded (or refused).
        with tempfile.TemporaryDirectory(prefix="medclass-model-") as folder:
            package = load_package(fetch_registered(str(spec), Path(folder), tracking_uri))
        return TorchPredictor(package, f"registered model {spec}")
    path = Path(spec)
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor.open(path)
    if path.is_dir() and is_package(path):
        return TorchPredictor(load_package(path), f"package {path}")
    if path.is_dir() and RunDir.is_run_dir(path):
        return TorchPredictor(load_package(run_package(path)), f"run {path} (best checkpoint)")
    raise ModelError(
        f"{path} is not a medclass model: give a model package (medclass export), a run directory or an .onnx file"
    )


_SUFFIXES = set(IMAGE_EXTENSIONS)


def collect_images(inputs: list[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files, folders (searched recursively for image files) and glob patterns -> image paths in a stable order,
    plus the inputs that matched nothing (reported, not fatal, unless nothing at all was found)."""
    found: list[Path] = []
    missing: list[dict[str, str]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p, _SUFFIXES))
            if not files:
                missing.append({"file": item, "reason": "folder holds no image files"})
            found.extend(files)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                missing.append({"file": item, "reason": "pattern matched no files"})
            found.extend(matches)
        else:
            missing.append({"file": item, "reason": "no such file or folder"})
    unique = list(dict.fromkeys(found))
    if not unique:
        detail = "; ".join(f"{m['file']}: {m['reason']}" for m in missing) or "no inputs given"
        raise UserError(f"no images to predict ({detail})")
    return unique, missing


@dataclass
class Prediction:
    file: str
    predicted: list[str]  # one class, or the labels present for multi-label tasks; empty when refused
    probabilities: dict[str, float]
    top: list[tuple[str, float]]
    gate: dict[str, Any] | None = None  # GateVerdict.as_dict(), when the gate ran


@dataclass
class PredictionResult:
    predictions: list[Prediction]
    unreadable: list[dict[str, str]] = field(default_factory=list)
    model: str = ""
    calibrated: bool = False
    tta: bool = False
    gate: str = "off"  # off, warn or refuse; "none" when the model has no gate


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def decode(predictor: Predictor, source: Any, max_decode_bytes: int | None = None) -> np.ndarray:
    """One image (path or file object) as uint8 (C, H, W) at the predictor's decode size (refused from its header
    when decoding it would need more than ``max_decode_bytes``)."""
    return decode_and_size(predictor, source, max_decode_bytes)[0]


def decode_and_size(
    predictor: Predictor, source: Any, max_decode_bytes: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode` and the source image's (width, height)."""
    pre = predictor.preprocessing
    frame = pre.get("dicom_frame", "middle")
    array, size = load_image_and_size(source, pre["decode_size"], pre["resize"], pre["channels"], max_decode_bytes,
                                      frame)  # fmt: skip
    return np.transpose(array, (2, 0, 1)), size


def check_tta(predictor: Predictor, tta: bool) -> None:
    """Test-time augmentation mirrors images left-right: refused for a model whose images have sides."""
    if tta and predictor.preprocessing.get("laterality"):
        raise UserError(
            f"--tta averages each image with its left-right mirror, but {predictor.description} was trained on images "
            "whose sides matter (data.laterality, or classes that name a side): a mirror is another anatomy; "
            "predict without --tta"
        )


def probabilities(predictor: Predictor, images: np.ndarray, tta: bool, calibrated: bool) -> np.ndarray:
    """Class probabilities for a uint8 (B, C, H, W) batch. TTA averages the probabilities of the image and its
    horizontal mirror; calibrated divides the logits by the temperature fitted on validation."""
    return scored(predictor, images, tta, calibrated, ood=False)[0]


def scored(
    predictor: Predictor, images: np.ndarray, tta: bool, calibrated: bool, ood: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """(class probabilities, out-of-distribution scores of the unmirrored images when ``ood``, else None)."""
    check_tta(predictor, tta)
    views = [images, images[..., ::-1]] if tta else [images]
    temperature = float(predictor.calibration.get("temperature", 1.0)) if calibrated else 1.0
    if not (np.isfinite(temperature) and temperature > 0):
        raise ModelError(f"{predictor.description}: calibration temperature {temperature} is not a positive number")
    outlier = None
    scores = []
    for index, view in enumerate(views):
        view = np.ascontiguousarray(view)
        if ood and index == 0:
            logits, outlier = predictor.outputs(view)
        else:
            logits = predictor.logits(view)
        scores.append(scores_from_logits(torch.from_numpy(logits / temperature), predictor.task))
    result = torch.stack(scores).mean(dim=0).numpy()
    if not np.isfinite(result).all():  # never a NaN probability with a class next to it
        raise ModelError(f"{predictor.description} gives non-finite scores for this input; the model is damaged")
    return result, outlier


def decide(predictor: Predictor, scores: np.ndarray, calibrated: bool) -> list[list[str]]:
    """Predicted class per image (argmax; binary at 0.5 or, calibrated, at the operating threshold chosen on
    validation), or the labels over their thresholds for multi-label tasks."""
    classes = predictor.classes
    calibration = predictor.calibration if calibrated else {}
    if predictor.task == "multilabel":
        thresholds = np.asarray(calibration.get("label_thresholds", [0.5] * len(classes)))
        return [[c for c, on in zip(classes, decide_positive(row, thresholds), strict=True) if on] for row in scores]
    if predictor.task == "binary":
        if "threshold" not in calibration:
            return [[classes[int(p)]] for p in decide_positive(scores[:, 1])]
        # The operating threshold is on P(positive class); packages from before positive classes were named
        # chose it on the second class.
        positive = int(calibration.get("positive_index", 1))
        other = 1 - positive
        decided = decide_positive(scores[:, positive], float(calibration["threshold"]))
        return [[classes[positive if p else other]] for p in decided]
    return [[classes[int(i)]] for i in scores.argmax(axis=1)]


def decision_rule(predictor: Predictor, calibrated: bool) -> str:
    """How the predicted class is chosen, in words (shown by the service and its page)."""
    calibration = predictor.calibration if calibrated else {}
    if predictor.task == "multilabel":
        cut = "its threshold chosen on validation" if "label_thresholds" in calibration else "0.5"
        return f"each label present when its probability exceeds {cut}"
    if predictor.task == "binary" and "threshold" in calibration:
        positive = predictor.classes[int(calibration.get("positive_index", 1))]
        rule = rule_words({"rule": calibration.get("threshold_rule", "unknown")})
        threshold = float(calibration["threshold"])
        return f"{positive} when P({positive}) > {threshold:.3f} (the operating threshold chosen on validation: {rule})"
    return "the most probable class"


def explain_decision(predictor: Predictor, row: np.ndarray, decided: str, calibrated: bool) -> str | None:
    """One line when the calibrated binary decision is not the most probable class (the operating threshold is
    not 0.5), else None."""
    top = predictor.classes[int(np.argmax(row))]
    calibration = predictor.calibration if calibrated else {}
    if predictor.task != "binary" or decided == top or "threshold" not in calibration:
        return None
    index = int(calibration.get("positive_index", 1))
    positive, threshold = predictor.classes[index], float(calibration["threshold"])
    side = "exceeds" if decide_positive(row[index], threshold) else "does not exceed"
    return (f"P({positive}) = {row[index]:.3f} {side} the operating threshold {threshold:.3f} chosen on validation, "
            f"so the answer is {decided} although {top} is more probable ({row.max():.3f})")  # fmt: skip


def prediction_mode(predictor: Predictor, gate: str, calibrated: bool) -> str:
    """What ``gate`` means for this predictor: off, warn, refuse, or "none" when the model has no gate (a one-line
    error for ``refuse`` then, and for ``calibrated`` without a calibration)."""
    if calibrated and not predictor.calibration:
        raise UserError(f"{predictor.description} has no calibration; evaluate its run first (medclass evaluate)")
    gated = check_mode(gate, predictor.gate, predictor.description)
    return gate if gated or gate == "off" else "none"


def _decode_file(predictor: Predictor, path: Path, gated: bool) -> tuple[np.ndarray | None, int | None, str | None]:
    """(uint8 (C, H, W) image, shorter side of the source when the gate needs it, None) or (None, None, reason)."""
    try:
        image, size = decode_and_size(predictor, path)
        return image, (min(size) if gated else None), None
    except DECODE_ERRORS as exc:
        return None, None, f"{type(exc).__name__}: {exc}"[:300]


def iter_predictions(
    predictor: Predictor,
    files: list[Path],
    batch_size: int = 32,
    top_k: int = 3,
    tta: bool = False,
    calibrated: bool = False,
    mode: str = "warn",
    workers: int = 2,
) -> Iterator[tuple[list[Prediction], list[dict[str, str]]]]:
    """(predictions, unreadable files) batch by batch, in the files' order; ``mode`` from :func:`prediction_mode`.

    ``workers`` threads decode the next batch while the model runs on this one (PIL and the resize release the
    GIL); 0 decodes in this thread. Nothing is kept between batches, so an archive of any size streams."""
    gated = mode in ("warn", "refuse")
    k = max(1, min(top_k, len(predictor.classes)))
    batches = _batches(files, batch_size)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="medclass-decode") if workers > 0 else None

    def start(batch: list[Path] | None) -> list[Any] | None:
        if batch is None:
            return None
        if pool is None:
            return [(path, _decode_file(predictor, path, gated)) for path in batch]
        return [(path, pool.submit(_decode_file, predictor, path, gated)) for path in batch]

    try:
        pending = start(next(batches, None))
        while pending is not None:
            current, pending = pending, start(next(batches, None))  # the next batch decodes meanwhile
            images, kept, sides, unreadable = [], [], [], []
            for path, job in current:
                image, side, error = job if pool is None else job.result()
                if image is None:
                    unreadable.append({"file": str(path), "reason": error})
                else:
                    images.append(image)
                    sides.append(side)
                    kept.append(path)
            predictions: list[Prediction] = []
            if images:
                stacked = np.stack(images)
                scores, ood = scored(predictor, stacked, tta, calibrated, ood=gated)
                verdicts = judge(predictor.gate, stacked, ood, sides) if ood is not None else [None] * len(kept)
                decided = decide(predictor, scores, calibrated)
                for path, row, labels, verdict in zip(kept, scores, decided, verdicts, strict=True):
                    order = np.argsort(-row)[:k]
                    prediction = Prediction(
                        file=str(path),
                        predicted=labels,
                        probabilities={c: float(p) for c, p in zip(predictor.classes, row, strict=True)},
                        top=[(predictor.classes[i], float(row[i])) for i in order],
                        gate=None if verdict is None else verdict.as_dict(),
                    )
                    if verdict is not None and not verdict.accepted and mode == "refuse":
                        prediction.predicted, prediction.probabilities, prediction.top = [], {}, []
                    predictions.append(prediction)
            yield predictions, unreadable
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def predict_files(
    predictor: Predictor,
    inputs: list[str],
    batch_size: int = 32,
    top_k: int = 3,
    tta: bool = False,
    calibrated: bool = False,
    progress: bool = False,
    gate: str = "warn",
    workers: int = 2,
) -> PredictionResult:
    """Predict every image the inputs name; files that cannot be read are listed in ``unreadable``. With a gate
    (``warn``, ``refuse``), each prediction says whether the image was accepted; refused images get no class."""
    mode = prediction_mode(predictor, gate, calibrated)
    files, unreadable = collect_images(inputs)
    result = PredictionResult([], unreadable, predictor.description, calibrated, tta, mode)
    track = progress_tracker(len(files)) if progress else None
    for predictions, skipped in iter_predictions(predictor, files, batch_size, top_k, tta, calibrated, mode, workers):
        result.predictions += predictions
        result.unreadable += skipped
        if track is not None:
            track(len(predictions) + len(skipped))
    if track is not None:
        track(0, done=True)
    return result


def progress_tracker(total: int):
    """advance(n, done=False): a transient progress bar on the terminal."""
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("predicting", total=total)
    bar.start()

    def advance(n: int, done: bool = False) -> None:
        bar.advance(task, n)
        if done:
            bar.stop()

    return advance


def write_predictions(result: PredictionResult, path: Path, classes: list[str], single_label: bool) -> Path:
    """CSV (one row per image: file, prediction, top-k, every probability) or JSON (by the file's suffix)."""
    import csv
    import io

    if path.suffix.lower() == ".json":
        payload = {
            "model": result.model,
            "calibrated": result.calibrated,
            "tta": result.tta,
            "gate": result.gate,
            # One class is a string for single-label tasks, as in the CSV and the service; labels stay a list.
            "predictions": [
                {**p.__dict__, "predicted": p.predicted[0] if single_label and p.predicted else p.predicted}
                for p in result.predictions
            ],
            "unreadable": result.unreadable,
        }
        return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    k = max((len(p.top) for p in result.predictions), default=0)
    gated = any(p.gate is not None for p in result.predictions)
    writer.writerow(csv_header(classes, single_label, k, gated))
    writer.writerows(csv_row(p, classes, k, gated) for p in result.predictions)
    return atomic_write_text(path, buffer.getvalue())


__all__ = [
    "Prediction",
    "PredictionResult",
    "Predictor",
    "TorchPredictor",
    "collect_images",
    "csv_header",
    "csv_row",
    "iter_predictions",
    "decision_rule",
    "explain_decision",
    "load_predictor",
    "predict_files",
    "prediction_mode",
    "progress_tracker",
    "write_predictions",
]
