"""``medclass serve``: a FastAPI service around one model, with a small page for people.

- ``POST /predict``: one uploaded image -> classes and probabilities (top-k), optional Grad-CAM heatmap (PNG,
  base64). Uploads above ``max_upload_bytes`` get 413 (before the body is read when Content-Length says so, else
  the moment the body passes the limit), images above ``max_pixels`` or whose decoding would need more than
  ``max_decode_bytes`` (decompression bombs, 16-bit and float images by their bytes per pixel) 413 from their
  header, files that are not images or are truncated 422, a body that does not arrive within ``body_timeout``
  408, more uploads than ``concurrency + queue`` at once 503 with Retry-After; a request without a file is
  FastAPI's 422. The limits and the memory bound they give are in :mod:`medclass.inference.service_limits`.
- Every answer carries ``gate`` (the out-of-distribution score, the quality verdict, ``accepted`` and the reason)
  when the model has a gate and ``gate_mode`` is not off; with ``refuse`` a rejected image gets no class.
- ``GET /health``, ``GET /model`` (classes, task, preprocessing, calibration, gate, where the model came from).
- ``GET /``: the page: choose an image, see the prediction and the heatmap.

A bad request never affects the next one: each is decoded on its own in one of ``concurrency`` slots, and
predicted under a lock (the PyTorch model is shared; Grad-CAM hooks are not thread-safe).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse

from medclass.data.dicom import looks_like_dicom
from medclass.data.images import DECODE_ERRORS, DecodeBudgetExceeded, image_dimensions
from medclass.inference.explain import heatmaps, overlay, png_bytes, why_no_heatmaps
from medclass.inference.gatekeeping import check_mode, judge
from medclass.inference.predictor import (
    Predictor,
    decide,
    decision_rule,
    decode,
    explain_decision,
    probabilities,
    scored,
)
from medclass.inference.service_limits import (
    DeadlineH11Protocol,
    RequestGuard,
    ServiceLimits,
    return_freed_memory_at_once,
)


def create_app(predictor: Predictor, limits: ServiceLimits | None = None, top_k: int = 5, gate_mode: str = "warn"):
    limits = limits or ServiceLimits()
    gated = check_mode(gate_mode, predictor.gate, predictor.description)
    max_upload_bytes, max_pixels = limits.max_upload_bytes, limits.max_pixels
    app = FastAPI(title="medclass", description=f"Image classifier: {predictor.description}")
    guard: RequestGuard | None = None

    def guarded(asgi_app):  # FastAPI calls this once, when it builds its middleware stack
        nonlocal guard
        guard = RequestGuard(asgi_app, limits)
        return guard

    app.add_middleware(guarded)  # type: ignore[arg-type]
    lock = threading.Lock()
    cannot_explain = why_no_heatmaps(predictor)

    def read_upload(upload: UploadFile) -> bytes:
        data = upload.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than the limit of {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(422, "the uploaded file is empty")
        return data

    def check_pixels(data: bytes) -> int:
        """Read the header only: refuse huge images before any pixel is decoded. Returns the shorter side."""
        try:
            width, height = image_dimensions(io.BytesIO(data))
        except DECODE_ERRORS as exc:
            raise HTTPException(422, f"not a readable image ({type(exc).__name__}: {str(exc)[:160]})") from None
        if width * height > max_pixels:
            raise HTTPException(413, f"image of {width}x{height} pixels is over the limit of {max_pixels} pixels")
        return min(width, height)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict[str, Any]:
        manifest = predictor.manifest
        return {
            "description": predictor.description,
            "task": predictor.task,
            "classes": predictor.classes,
            "preprocessing": predictor.preprocessing,
            "calibration": predictor.calibration,
            "source": manifest.get("source", {}),
            "model": manifest.get("model", {}),
            "heatmaps": cannot_explain is None,
            "limits": limits.as_dict(),
            "gate": {"mode": gate_mode if gated or gate_mode == "off" else "none", **predictor.gate},
        }

    @app.post("/predict")
    def predict(
        file: Annotated[UploadFile, File(description="An image file (PNG, JPEG, TIFF, BMP, DICOM, ...).")],
        heatmap: Annotated[bool, Query(description="Also return a HiResCAM heatmap of the predicted class.")] = False,
        calibrated: Annotated[bool, Query(description="Apply the temperature fitted on validation.")] = False,
    ) -> dict[str, Any]:
        data = read_upload(file)
        short_side = check_pixels(data)
        if calibrated and not predictor.calibration:
            raise HTTPException(409, "this model has no calibration; evaluate its run first")
        if heatmap and cannot_explain:
            raise HTTPException(409, cannot_explain)
        assert guard is not None  # built with the app's middleware stack before the first request
        with guard.slots:
            started = time.perf_counter()
            try:
                return answer(data, file.filename, heatmap, calibrated, short_side)
            finally:
                guard.record_seconds(time.perf_counter() - started)

    def answer(data: bytes, filename: str | None, heatmap: bool, calibrated: bool, side: int) -> dict[str, Any]:
        try:
            image = decode(predictor, io.BytesIO(data), limits.max_decode_bytes)
        except DecodeBudgetExceeded as exc:
            raise HTTPException(413, f"{exc} (--max-decode-mb); send a smaller image") from None
        except MemoryError:
            raise HTTPException(503, "not enough memory to decode this image now; retry later",
                                headers={"Retry-After": "10"}) from None  # fmt: skip
        except DECODE_ERRORS as exc:
            raise HTTPException(422, f"not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from None
        with lock:
            scores, ood = scored(predictor, image[None], tta=False, calibrated=calibrated, ood=gated)
            row = scores[0]
            order = np.argsort(-row)[: max(1, min(top_k, len(row)))]
            decided = decide(predictor, scores, calibrated)[0]
            single = predictor.task != "multilabel"
            response: dict[str, Any] = {"file": filename}
            if looks_like_dicom(io.BytesIO(data)):
                # a browser cannot show a DICOM file: the page shows the windowed image the model was given
                shown_image = np.repeat(image, 3 // image.shape[0], axis=0).transpose(1, 2, 0)
                response["image_png"] = base64.b64encode(png_bytes(np.ascontiguousarray(shown_image))).decode()
            if ood is not None:
                verdict = judge(predictor.gate, image[None], ood, [side])[0]
                response["gate"] = {"mode": gate_mode, **verdict.as_dict()}
                if not verdict.accepted and gate_mode == "refuse":
                    return response  # no class for an image the gate refuses
            response.update({
                # one class (a string) for single-label tasks, as predictions.csv/.json; a list of labels otherwise
                "predicted": decided[0] if single else decided,
                "decision_rule": decision_rule(predictor, calibrated),
                "top": [{"class": predictor.classes[i], "probability": float(row[i])} for i in order],
                "probabilities": {c: float(p) for c, p in zip(predictor.classes, row, strict=True)},
                "calibrated": calibrated,
            })  # fmt: skip
            explanation = explain_decision(predictor, row, decided[0], calibrated) if single else None
            if explanation:
                response["explanation"] = explanation
            if heatmap:
                # the evidence for the answer given (the decided class, which a threshold can make other than the top)
                shown = predictor.classes.index(decided[0]) if single and decided else int(order[0])
                cams = heatmaps(predictor.package, image[None], [shown])  # type: ignore[attr-defined]
                class_name = predictor.classes[shown]
                response["heatmap_class"] = class_name
                response["heatmap_method"] = cams.method
                note = cams.note(0, class_name)
                if note is None:
                    response["heatmap_png"] = base64.b64encode(png_bytes(overlay(image, cams.maps[0]))).decode()
                else:
                    response["heatmap_note"] = note
        return response

    page = resources.files("medclass.inference").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    return app


def warm_up(predictor: Predictor, gate_mode: str = "warn") -> None:
    """One prediction (and heatmap) of a blank image before the first request: the code and buffers they load
    are paid for at start, so the first user does not wait for them and the memory the limits bound is what
    requests add."""
    pre = predictor.preprocessing
    blank = np.zeros((1, pre["channels"], pre["decode_size"], pre["decode_size"]), dtype=np.uint8)
    probabilities(predictor, blank, tta=False, calibrated=False)
    if gate_mode != "off" and predictor.gate:
        scored(predictor, blank, tta=False, calibrated=False, ood=True)
    if why_no_heatmaps(predictor) is None:
        heatmaps(predictor.package, blank, [0])  # type: ignore[attr-defined]


def serve(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServiceLimits | None = None,
    gate_mode: str = "warn",
) -> None:
    import uvicorn

    limits = limits or ServiceLimits()
    check_mode(gate_mode, predictor.gate, predictor.description)
    return_freed_memory_at_once()
    warm_up(predictor, gate_mode)
    protocol = type("Protocol", (DeadlineH11Protocol,), {"idle_timeout": limits.idle_timeout})
    config = uvicorn.Config(
        create_app(predictor, limits, gate_mode=gate_mode), host=host, port=port, log_level="info", http=protocol
    )
    uvicorn.Server(config).run()
