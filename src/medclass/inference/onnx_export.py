"""ONNX export of a model package, with its preprocessing inside the graph (uint8 images in, logits out) and the
package manifest in the file's metadata, so the .onnx file alone is enough to predict with onnxruntime. Every
export is checked against PyTorch on real images; the largest absolute difference is reported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.errors import ModelError
from medclass.inference.package import MANIFEST, ManifestView, ModelPackage

INPUT_NAME, OUTPUT_NAME = "images", "logits"


@dataclass
class ExportReport:
    path: Path
    max_abs_difference: float
    images_checked: int


def export_onnx(
    package: ModelPackage, out: Path, check_images: np.ndarray | None = None, opset: int = 18
) -> ExportReport:
    """Write ``out`` (.onnx, torch.export-based exporter) with a dynamic batch dimension and compare onnxruntime
    with PyTorch on ``check_images`` (uint8 (B, C, H, W); random images when None)."""
    import onnx

    pre = package.preprocessing
    size, channels = pre["decode_size"], pre["channels"]
    example = torch.zeros((2, channels, size, size), dtype=torch.uint8)
    module = package.module()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False,
        )  # fmt: skip
    try:
        program.save(str(partial))
        model = onnx.load(str(partial))
        entry = model.metadata_props.add()
        entry.key, entry.value = MANIFEST, json.dumps(package.manifest)
        onnx.checker.check_model(model)
        onnx.save(model, str(partial))
        partial.replace(out)
    except OSError as exc:  # a full disk: name the file the user asked for, leave no partial file behind
        exc.filename = exc.filename or str(out)
        raise
    finally:
        partial.unlink(missing_ok=True)
    if check_images is None:
        check_images = np.random.default_rng(0).integers(0, 256, (4, channels, size, size), dtype=np.uint8)
    predictor = OnnxPredictor.open(out)
    expected = package.logits(torch.from_numpy(check_images)).numpy()
    difference = float(np.max(np.abs(predictor.logits(check_images) - expected)))
    return ExportReport(out, difference, len(check_images))


@dataclass
class OnnxPredictor(ManifestView):
    """Predicts with onnxruntime on CPU (or CUDA when onnxruntime-gpu is installed)."""

    session: Any
    manifest: dict[str, Any]
    description: str

    @classmethod
    def open(cls, path: Path) -> OnnxPredictor:
        import onnxruntime as ort

        if not Path(path).is_file():
            raise ModelError(f"{path} does not exist: export one with `medclass export RUN_DIR --onnx`")
        try:
            session = ort.InferenceSession(str(path), providers=ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own untyped errors for files that are not models
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ModelError(f"{path} is not a valid ONNX model ({first})") from None
        raw = session.get_modelmeta().custom_metadata_map.get(MANIFEST)
        if raw is None:
            raise ModelError(f"{path} is an ONNX model but not one medclass exported (no {MANIFEST} metadata)")
        return cls(session, json.loads(raw), f"onnx {path}")

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]
