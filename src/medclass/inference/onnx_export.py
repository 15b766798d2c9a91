"""ONNX export of a model package, with its preprocessing inside the graph (uint8 images in, logits out) and the
package manifest in the file's metadata, so the .onnx file alone is enough to predict with onnxruntime. A model
with a gate has a second output, ``ood_score`` (the out-of-distribution score, 1 = its threshold). Every export is
checked against PyTorch on real images; the largest absolute difference is reported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.errors import ModelError
from medclass.inference.package import MANIFEST, ManifestView, ModelPackage

INPUT_NAME, OUTPUT_NAME, OOD_OUTPUT = "images", "logits", "ood_score"


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
    gated = package.ood_score is not None
    module = package.gated_module() if gated else package.module()
    outputs = [OUTPUT_NAME, OOD_OUTPUT] if gated else [OUTPUT_NAME]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module, (example,), input_names=[INPUT_NAME], output_names=outputs, opset_version=opset,
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
    expected, expected_ood = package.outputs(torch.from_numpy(check_images))
    logits, ood = predictor.outputs(check_images)
    difference = float(np.max(np.abs(logits - expected.numpy())))
    if expected_ood is not None and ood is not None:
        difference = max(difference, float(np.max(np.abs(ood - expected_ood.numpy()))))
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
        options = ort.SessionOptions()
        # onnxruntime's threads spin between runs by default, taking the cores from the threads that decode the
        # next batch meanwhile (and from a service's other requests): predict with 2 decode threads went from 486 to
        # 515 images/s (median of 4) on this project's 2-core CPU with spinning off.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own untyped errors for files that are not models
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ModelError(f"{path} is not a valid ONNX model ({first})") from None
        raw = session.get_modelmeta().custom_metadata_map.get(MANIFEST)
        if raw is None:
            raise ModelError(f"{path} is an ONNX model but not one medclass exported (no {MANIFEST} metadata)")
        return cls(session, json.loads(raw), f"onnx {path}")

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        names = [o.name for o in self.session.get_outputs()]
        if OOD_OUTPUT not in names:
            return self.logits(images), None
        logits, ood = self.session.run([OUTPUT_NAME, OOD_OUTPUT], {INPUT_NAME: np.ascontiguousarray(images, np.uint8)})
        return logits, ood
