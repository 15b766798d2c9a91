"""The model package: everything needed to use a trained model without its run directory or the training stack's
pickles. A directory holding

    medclass-model.json   what the model is: architecture (the model config), class names, task, preprocessing,
                          calibration (temperature and thresholds fitted on validation), where it came from
    weights.safetensors   the network's weights (safetensors: tensors only, nothing executable)
    gate.safetensors      when the run has a gate: the out-of-distribution score's class means and precision
                          (its threshold and the image-quality limits are under "gate" in the manifest)

Loading reads JSON and safetensors only; no pickle is ever involved, so a package from a stranger cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medclass import __version__
from medclass.config import ModelConfig
from medclass.config.data import MAX_IMAGE_SIZE
from medclass.data.quality import limits_problem
from medclass.data.transforms import SIDE_WORDS, BatchPreprocess, classes_naming
from medclass.errors import ModelError, UserError
from medclass.inference.ensemble import EnsembleNet
from medclass.inference.locate import MANIFEST, is_package
from medclass.io import atomic_write_json, give_usual_permissions
from medclass.models import Classifier, create_model
from medclass.models.gate import GATE_TENSORS, GatedNet, MahalanobisScore, load_score, read_gate
from medclass.models.heads import build_head
from medclass.models.hf_models import HFFeatures
from medclass.run_dir import RunDir
from medclass.tasks import TASKS, Task
from medclass.training.network import load_network

PACKAGE_FORMAT = "medclass-model"
PACKAGE_FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
ONNX_FILE = "model.onnx"  # `medclass export --onnx` writes it beside the weights


class ManifestView:
    """What every predictor reads from its manifest (a package's, or the copy in an ONNX file's metadata)."""

    manifest: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def task(self) -> Task:
        return self.manifest["task"]

    @property
    def preprocessing(self) -> dict[str, Any]:
        """decode_size, resize, channels (how files are read), in_chans, input_size, mean, std (what the net sees)."""
        return self.manifest["preprocessing"]

    @property
    def calibration(self) -> dict[str, Any]:
        return self.manifest.get("calibration") or {}

    @property
    def gate(self) -> dict[str, Any]:
        """The gate's settings (threshold, quality limits, validation pass rates); {} for a model without one."""
        return self.manifest.get("gate") or {}


class PreprocessedNet(nn.Module):
    """uint8 (B, C, H, W) images at decode size -> logits, as one module (for ONNX export and heatmaps)."""

    def __init__(self, net: Classifier, preprocess: BatchPreprocess) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))


@dataclass
class ModelPackage(ManifestView):
    """A loaded package: the network with its preprocessing, in eval mode, and what the manifest says."""

    net: Classifier
    preprocess: BatchPreprocess
    manifest: dict[str, Any]
    path: Path
    ood_score: MahalanobisScore | None = None

    def module(self) -> PreprocessedNet:
        return PreprocessedNet(self.net, self.preprocess).eval()

    def gated_module(self) -> GatedNet:
        """uint8 images -> (logits, out-of-distribution score); only for a package with a gate."""
        if self.ood_score is None:
            raise ModelError(f"{self.path} has no gate")
        return GatedNet(self.net, self.preprocess, self.ood_score).eval()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) images at decode size -> logits."""
        with torch.inference_mode():
            return self.net(self.preprocess(images))

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, out-of-distribution score or None without a gate) from one pass of the backbone."""
        if self.ood_score is None:
            return self.logits(images), None
        with torch.inference_mode():
            return self.gated_module()(images)


def save_package(
    folder: Path,
    net: Classifier,
    model_config: ModelConfig,
    task: Task,
    classes: list[str],
    preprocessing: dict[str, Any],
    calibration: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    gate: tuple[MahalanobisScore, dict[str, Any]] | None = None,
) -> Path:
    """Write a package directory (created if needed); returns its path. ``gate``: the run's gate (score, settings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    architecture = model_config.model_dump(mode="json")
    architecture.update(pretrained=False, weights=None)  # the package's weights replace any pretrained ones
    manifest: dict[str, Any] = {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "medclass_version": __version__,
        "model": architecture,
        "task": task,
        "classes": list(classes),
        "preprocessing": preprocessing,
        "calibration": calibration or {},
        "source": source or {},
    }
    hf_model = getattr(net.backbone, "model", None)
    if net.family == "hf" and hf_model is not None:
        manifest["hf_config"] = hf_model.config.to_dict()  # rebuild the architecture offline, without the hub
    if gate is not None:
        manifest["gate"] = gate[1]
    return _write(folder, net.state_dict(), manifest, gate[0] if gate is not None else None)


def _write(
    folder: Path, state: dict[str, torch.Tensor], manifest: dict[str, Any], gate: MahalanobisScore | None = None
) -> Path:
    """The weights and the gate's statistics (safetensors), then the manifest, each written atomically."""
    _save_tensors(state, folder / WEIGHTS)
    if gate is not None:
        try:
            _save_tensors(gate.state_dict(), folder / GATE_TENSORS)
        except OSError:  # a full disk: no half package (the manifest is not written either)
            (folder / WEIGHTS).unlink(missing_ok=True)
            raise
    else:
        (folder / GATE_TENSORS).unlink(missing_ok=True)
    (folder / ONNX_FILE).unlink(missing_ok=True)  # made from the old weights: export it again
    atomic_write_json(folder / MANIFEST, manifest)  # last: a folder with a manifest is a complete package
    return folder


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    folder = path.parent
    partial = folder / f".{path.name}.partial"
    try:
        save_file(state, str(partial), metadata={"format": PACKAGE_FORMAT})
    except SafetensorError as exc:
        # safetensors reports a full disk as "I/O error: ... (os error 28)"; the caller needs the OSError.
        partial.unlink(missing_ok=True)
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from None
    give_usual_permissions(partial)  # safetensors writes 0600; its siblings are 0644 under the usual umask
    os.replace(partial, path)  # atomic: readers see the old file or the whole new one


# how files are read: one decoding feeds every member
ENSEMBLE_SHARED = ("decode_size", "resize", "channels", "dicom_frame")


def save_ensemble(folder: Path, packages: list[ModelPackage], source: dict[str, Any] | None = None) -> Path:
    """One package of several (the members' weights in one safetensors file, one manifest) whose probabilities
    are the mean of the members'. The members must agree on task, classes and how files are decoded."""
    if len(packages) < 2:
        raise ModelError(f"an ensemble needs at least two models, got {len(packages)}")
    first = packages[0]
    for package in packages[1:]:
        if package.task != first.task or package.classes != first.classes:
            raise ModelError(f"{package.path} and {first.path} differ in task or classes; they cannot be averaged")
        differs = [k for k in ENSEMBLE_SHARED if package.preprocessing.get(k) != first.preprocessing.get(k)]
        if differs:
            raise ModelError(f"{package.path} and {first.path} read images differently ({', '.join(differs)})")
        if "ensemble" in package.manifest:
            raise ModelError(f"{package.path} is an ensemble already; give its members instead")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    members = []
    for package in packages:
        member = {k: package.manifest[k] for k in ("model", "preprocessing", "calibration", "source", "hf_config")
                  if k in package.manifest}  # fmt: skip
        members.append(member)
    manifest: dict[str, Any] = {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "medclass_version": __version__,
        "model": first.manifest["model"],  # the first member's, for readers that show one architecture
        "task": first.task,
        "classes": first.classes,
        "preprocessing": first.preprocessing,
        "calibration": {},
        "source": source or {},
        "ensemble": {"combine": "mean of the members' probabilities", "members": members},
    }
    net = EnsembleNet([package.module() for package in packages], first.task)
    return _write(folder, net.state_dict(), manifest)


def add_to_source(folder: Path, **fields: Any) -> None:
    """Record more about where a package came from (e.g. the test metrics of an ensemble, known only once it has
    been scored) in its manifest."""
    manifest = read_manifest(folder)
    manifest["source"] = {**manifest.get("source", {}), **fields}
    atomic_write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    manifest_path = path / MANIFEST if path.is_dir() else path
    if not manifest_path.is_file():
        raise ModelError(f"{path} is not a medclass model package (no {MANIFEST}); export one with `medclass export`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{manifest_path} is not valid JSON ({exc}); the package is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise ModelError(f"{manifest_path} is not a medclass model manifest (format is not {PACKAGE_FORMAT!r})")
    if manifest.get("format_version") != PACKAGE_FORMAT_VERSION:
        raise ModelError(
            f"{manifest_path} has package format version {manifest.get('format_version')!r}; this medclass reads "
            f"version {PACKAGE_FORMAT_VERSION}"
        )
    missing = [key for key in ("model", "task", "classes", "preprocessing") if key not in manifest]
    if missing:
        raise ModelError(f"{manifest_path} lacks {', '.join(missing)}; the package is damaged")
    problem = manifest_problem(manifest)
    if problem:
        raise ModelError(f"{manifest_path}: {problem}; the package is damaged or was edited by hand")
    return manifest


MAX_CLASSES = 100_000


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What in a manifest would build a wrong or unbounded model, or give NaN probabilities; None when sound."""
    classes, task = manifest["classes"], manifest["task"]
    if task not in TASKS:
        return f"task {task!r} is not one of {', '.join(TASKS)}"
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "classes must be a list of names"
    if not 1 <= len(classes) <= MAX_CLASSES or (task != "multilabel" and len(classes) < 2):
        return f"{len(classes)} classes (a {task} model needs 2 to {MAX_CLASSES:,})"
    pre = manifest["preprocessing"]
    if not isinstance(pre, dict):
        return "preprocessing must be a mapping"
    for key in ("decode_size", "input_size"):
        value = pre.get(key)
        if not (key == "input_size" and value is None) and not (
            isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_IMAGE_SIZE
        ):
            return f"preprocessing.{key} {value!r} is not a side length from 1 to {MAX_IMAGE_SIZE}"
    if pre.get("in_chans") not in (1, 3) or pre.get("channels") not in (1, 3):
        return "preprocessing.in_chans and channels must be 1 or 3"
    if pre.get("resize") not in ("squash", "crop", "pad"):
        return f"preprocessing.resize {pre.get('resize')!r} is not squash, crop or pad"
    frame = pre.get("dicom_frame", "middle")
    if frame not in ("middle", "first") and not (isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0):
        return f"preprocessing.dicom_frame {frame!r} is not middle, first or a frame number"
    mean, std = pre.get("mean"), pre.get("std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) and len(std) in (1, 3)):
        return "preprocessing.mean and std must be lists of 1 or 3 numbers"
    if not all(_finite(v) for v in mean) or not all(_finite(v) and v > 0 for v in std):
        return f"preprocessing.std {std} must be positive and mean {mean} finite (a zero std gives NaN probabilities)"
    calibration = manifest.get("calibration") or {}
    if not isinstance(calibration, dict):
        return "calibration must be a mapping"
    if "temperature" in calibration and not (_finite(calibration["temperature"]) and calibration["temperature"] > 0):
        return f"calibration.temperature {calibration['temperature']!r} must be a positive number"
    if "threshold" in calibration and not (_finite(calibration["threshold"]) and 0 <= calibration["threshold"] <= 1):
        return f"calibration.threshold {calibration['threshold']!r} must be a probability"
    if calibration.get("positive_index", 1) not in (0, 1):
        return "calibration.positive_index must be 0 or 1"
    gate = manifest.get("gate")
    if gate is not None:
        if not isinstance(gate, dict):
            return "gate must be a mapping"
        problem = limits_problem(gate.get("quality", {}))
        if problem:
            return f"gate: {problem}"
    return None


def _head_outputs(state: dict[str, torch.Tensor]) -> int | None:
    """Output units of the classifier head stored in the weights (its last weight matrix), when it has one."""
    matrices = [k for k, v in state.items() if k.startswith("head.") and k.endswith("weight") and v.ndim == 2]
    return int(state[matrices[-1]].shape[0]) if matrices else None


def _build_net(manifest: dict[str, Any]) -> Classifier:
    model_config = ModelConfig(**manifest["model"])
    num_classes = len(manifest["classes"])
    if model_config.family == "hf" and "hf_config" in manifest:
        from transformers import AutoConfig, AutoModelForImageClassification  # only HF packages need it

        hf_dict = dict(manifest["hf_config"])
        hf_config = AutoConfig.for_model(hf_dict.pop("model_type"), **hf_dict)
        model = AutoModelForImageClassification.from_config(hf_config)
        width = model.classifier.in_features if hasattr(model.classifier, "in_features") else None
        model.classifier = torch.nn.Identity()
        head = build_head(model_config.head, width, num_classes)
        pre = manifest["preprocessing"]
        return Classifier(HFFeatures(model), head, width, pre["input_size"], pre["mean"], pre["std"], "hf")
    return create_model(model_config, num_classes)


def load_package(path: str | Path) -> ModelPackage:
    """Rebuild the network from the manifest and load the safetensors weights (strictly: every key must match)."""
    path = Path(path)
    manifest = read_manifest(path)
    folder = path if path.is_dir() else path.parent
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{folder} has no {WEIGHTS}; the package is incomplete")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights} is not a readable safetensors file ({exc}); the package is damaged") from None
    if "ensemble" in manifest:
        return _load_ensemble(folder, manifest, state)
    outputs = _head_outputs(state)
    if outputs is not None and outputs != len(manifest["classes"]):
        raise ModelError(
            f"{MANIFEST} in {folder} names {len(manifest['classes'])} classes but the head in {WEIGHTS} has "
            f"{outputs} outputs; the package is damaged or was edited by hand"
        )
    net, preprocess = _build_entry(folder, manifest, "")
    _load_weights(net, state, weights, "architecture")
    score = None
    if "gate" in manifest:
        try:
            score = load_score(folder / GATE_TENSORS)
        except ValueError as exc:
            raise ModelError(f"{folder}: the gate is damaged ({exc}); fit it again with `medclass gate fit`") from None
        width = getattr(net, "num_features", None)
        if width is not None and score.means.shape[1] != width:
            raise ModelError(
                f"{folder}: the gate was fitted on {score.means.shape[1]} features, the model gives {width}"
            )
    return ModelPackage(net.eval(), preprocess.eval(), manifest, folder, score)


def _load_ensemble(folder: Path, manifest: dict[str, Any], state: dict[str, torch.Tensor]) -> ModelPackage:
    members = manifest["ensemble"].get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise ModelError(f"{MANIFEST} in {folder}: an ensemble lists at least two members; the package is damaged")
    modules = []
    for index, member in enumerate(members):
        member = {**member, "task": manifest["task"], "classes": manifest["classes"]}
        problem = manifest_problem(member) if isinstance(member.get("preprocessing"), dict) else "no preprocessing"
        if problem:
            raise ModelError(f"{MANIFEST} in {folder}: member {index + 1}: {problem}; the package is damaged")
        modules.append(PreprocessedNet(*_build_entry(folder, member, f"member {index + 1}: ")))
    ensemble = EnsembleNet(modules, manifest["task"])
    _load_weights(ensemble, state, folder / WEIGHTS, "ensemble")
    return ModelPackage(ensemble.eval(), nn.Identity(), manifest, folder)  # each member preprocesses itself


def _build_entry(folder: Path, entry: dict[str, Any], member: str) -> tuple[nn.Module, BatchPreprocess]:
    """The network and preprocessing that one manifest entry (the package's, or an ensemble member's) describes."""
    try:
        model_config = ModelConfig(**entry["model"])
    except (ValidationError, TypeError) as exc:
        raise ModelError(
            f"{MANIFEST} in {folder}: {member}the model section is not valid ({str(exc).splitlines()[0]})"
        ) from None
    try:
        net = _build_net({**entry, "model": model_config.model_dump()})
    except UserError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{MANIFEST} in {folder}: {member}cannot build {model_config.name} ({exc})"[:400]) from None
    pre = entry["preprocessing"]
    return net, BatchPreprocess(pre["in_chans"], pre["input_size"], pre["mean"], pre["std"])


def _load_weights(net: nn.Module, state: dict[str, torch.Tensor], weights: Path, what: str) -> None:
    """Strictly: every key must match, and a shape that does not fit is named."""
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit: "size mismatch for ..."
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise ModelError(f"{weights} does not fit the {what} in {MANIFEST} ({detail})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{weights} does not fit the {what} in {MANIFEST} (missing {len(result.missing_keys)} keys, e.g. "
            f"{result.missing_keys[:2]}; unexpected {len(result.unexpected_keys)}, e.g. {result.unexpected_keys[:2]})"
        )


def package_from_run(run_dir: str | Path, checkpoint: str = "best", out: str | Path | None = None) -> Path:
    """Export a run's checkpoint as a package (default: RUN_DIR/model for the best checkpoint). The calibration
    stored by the last evaluation of that checkpoint (fitted on validation) goes with it."""
    run = RunDir.open(run_dir)
    run.check_format()
    checkpoint_path = run.existing_checkpoint(checkpoint)
    config = run.load_config()
    data = run.read_data_summary()
    module, info = load_network(config, data["task"], data["classes"], checkpoint_path)
    decode_size, resize = config.data.decoding()
    preprocessing = {
        "decode_size": decode_size,
        "resize": resize,
        "channels": int(data["image_shape"][-1]),
        "in_chans": module.preprocess.in_chans,
        "input_size": module.preprocess.input_size,
        "mean": [float(v) for v in module.preprocess.mean.flatten()],
        "std": [float(v) for v in module.preprocess.std.flatten()],
    }
    if config.data.laterality or (config.data.laterality is None and classes_naming(SIDE_WORDS, data["classes"])):
        preprocessing["laterality"] = True  # left and right matter: never mirrored (no --tta)
    dicom = getattr(config.data, "dicom", None)
    if dicom is not None and dicom.frame != "middle":
        preprocessing["dicom_frame"] = dicom.frame  # which frame of a multi-frame DICOM file the model was trained on
    calibration = run.read_calibration(checkpoint)
    test = run.read_metrics("test", checkpoint).get("metrics", {}) if run.has_metrics("test", checkpoint) else {}
    source = {
        "run_dir": str(run.path.resolve()),
        "experiment": config.experiment,
        "checkpoint": checkpoint,
        "epoch": (info["epoch"] + 1) if info.get("epoch") is not None else None,
        "dataset": data.get("name"),
        "split": data.get("source", {}).get("split"),
        "seed": config.seed,
        "test_metrics": test,
    }
    folder = Path(out) if out is not None else run.package_dir(checkpoint)
    gate = read_gate(run.gate_dir(checkpoint), run.path)
    return save_package(folder, module.net, config.model, data["task"], data["classes"], preprocessing,
                        calibration, source, gate)  # fmt: skip


def run_package(run_dir: str | Path) -> Path:
    """RUN_DIR/model, exported from the run's best checkpoint on first use."""
    packaged = RunDir(run_dir).package_dir()
    if not is_package(packaged):
        package_from_run(run_dir)
    return packaged
