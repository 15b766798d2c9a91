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

A bad request never affects the next one: each is decoded on its own in one of ``concurrency`` slots; the
decoded images of requests in flight are then predicted together (dynamic batching: one pass for whatever arrived
within ``batch_wait`` of the first, up to ``max_batch`` images), which gives the same answers as one at a time.
Heatmaps are drawn under the same lock as the batches (the model is shared; Grad-CAM hooks are not thread-safe).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
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
    load_predictor,
    probabilities,
    scored,
)
from medclass.inference.service_limits import (
    DeadlineH11Protocol,
    RequestGuard,
    ServiceLimits,
    return_freed_memory_at_once,
)


@dataclass(frozen=True)
class Batching:
    """Dynamic batching: after the first image arrives, wait up to ``wait_s`` for others, then predict at most
    ``max_batch`` in one pass (``max_batch`` 1: one image at a time)."""

    max_batch: int = 16
    wait_s: float = 0.002

    def __post_init__(self) -> None:
        if self.max_batch < 1 or not 0 <= self.wait_s <= 1:
            raise ValueError("max_batch must be at least 1 and the wait between 0 and 1 s")


class Batcher:
    """One thread that predicts the images requests hand it, batched (see :class:`Batching`). Hand-written: the
    serving frameworks that batch (Triton, TorchServe, Ray Serve) are servers of their own, not a part of this one."""

    def __init__(self, predictor: Predictor, batching: Batching, gated: bool, lock: threading.Lock) -> None:
        self.predictor, self.batching, self.gated, self.lock = predictor, batching, gated, lock
        self.queue: queue.SimpleQueue[tuple[np.ndarray, bool, Future]] = queue.SimpleQueue()
        self.batches = 0  # passes run, for /model and tests
        self.images = 0
        threading.Thread(target=self._run, name="medclass-batcher", daemon=True).start()

    def predict(self, image: np.ndarray, calibrated: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(class probabilities of one (C, H, W) image, its out-of-distribution score as a (1,) array or None)."""
        future: Future = Future()
        self.queue.put((image, calibrated, future))
        return future.result()

    def _take(self) -> list[tuple[np.ndarray, bool, Future]]:
        items = [self.queue.get()]
        deadline = time.monotonic() + self.batching.wait_s
        while len(items) < self.batching.max_batch:
            try:
                items.append(self.queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                items.append(self.queue.get(timeout=remaining))
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        while True:
            items = self._take()
            for calibrated in (False, True):  # a calibrated answer divides the logits by the temperature
                group = [item for item in items if item[1] is calibrated]
                if group:
                    self._predict(group, calibrated)

    def _predict(self, group: list[tuple[np.ndarray, bool, Future]], calibrated: bool) -> None:
        try:
            with self.lock:
                images = np.stack([image for image, _, _ in group])
                scores, ood = scored(self.predictor, images, tta=False, calibrated=calibrated, ood=self.gated)
                self.batches += 1
                self.images += len(group)
        except Exception as exc:
            if len(group) > 1:  # one at a time, so that only the request whose image fails gets the error
                for item in group:
                    self._predict([item], calibrated)
            else:
                group[0][2].set_exception(exc)
            return
        for index, (_, _, future) in enumerate(group):
            future.set_result((scores[index : index + 1], None if ood is None else ood[index : index + 1]))


def create_app(
    predictor: Predictor,
    limits: ServiceLimits | None = None,
    top_k: int = 5,
    gate_mode: str = "warn",
    batching: Batching | None = None,
):
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
    batcher = Batcher(predictor, batching or Batching(), gated, lock)
    app.state.batcher = batcher
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
    def health() -> dict[str, Any]:
        return {"status": "ok", "images_predicted": batcher.images, "batches": batcher.batches}

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
            "batching": {"max_batch": batcher.batching.max_batch, "wait_ms": batcher.batching.wait_s * 1000},
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
        started = time.perf_counter()
        try:
            with guard.slots:  # decoding is what the slots bound (its memory); the batch holds decoded images only
                image = decode_upload(data)
            return answer(data, image, file.filename, heatmap, calibrated, short_side)
        finally:
            guard.record_seconds(time.perf_counter() - started)

    def decode_upload(data: bytes) -> np.ndarray:
        try:
            return decode(predictor, io.BytesIO(data), limits.max_decode_bytes)
        except DecodeBudgetExceeded as exc:
            raise HTTPException(413, f"{exc} (--max-decode-mb); send a smaller image") from None
        except MemoryError:
            raise HTTPException(503, "not enough memory to decode this image now; retry later",
                                headers={"Retry-After": "10"}) from None  # fmt: skip
        except DECODE_ERRORS as exc:
            raise HTTPException(422, f"not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from None

    def answer(
        data: bytes, image: np.ndarray, filename: str | None, heatmap: bool, calibrated: bool, side: int
    ) -> dict[str, Any]:
        scores, ood = batcher.predict(image, calibrated)
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
            with lock:  # Grad-CAM hooks the shared model: not while a batch runs
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


SERVE_SETTINGS = "MEDCLASS_SERVE_SETTINGS"  # how `--workers N` hands each worker process what to serve


@functools.cache
def _worker_settings() -> dict[str, Any]:
    """What ``serve(workers=N)`` handed this worker process, read once."""
    return json.loads(os.environ[SERVE_SETTINGS])


class WorkerH11Protocol(DeadlineH11Protocol):
    """The request-head deadline of a worker process of ``serve(workers=N)`` (uvicorn imports the protocol by
    name in each worker, so it cannot be a class made at run time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_timeout = float(_worker_settings()["limits"]["idle_timeout"])


def app_from_environment():
    """The app of one worker process of ``serve(workers=N)``: it loads the model itself, with its share of the
    CPU threads (N processes that each used every core would run several times slower each)."""
    import torch

    settings = _worker_settings()
    torch.set_num_threads(settings["threads"])
    predictor = load_predictor(settings["model"], settings["tracking_uri"])
    warm_up(predictor, settings["gate"])
    return create_app(predictor, ServiceLimits(**settings["limits"]), gate_mode=settings["gate"],
                      batching=Batching(**settings["batching"]))  # fmt: skip


def serve(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServiceLimits | None = None,
    gate_mode: str = "warn",
    batching: Batching | None = None,
    workers: int = 1,
    model_spec: str | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Serve ``predictor``; with ``workers`` > 1, that many processes each load ``model_spec`` (the limits and the
    batching apply to each)."""
    import uvicorn

    limits = limits or ServiceLimits()
    batching = batching or Batching()
    check_mode(gate_mode, predictor.gate, predictor.description)
    return_freed_memory_at_once()
    protocol = type("Protocol", (DeadlineH11Protocol,), {"idle_timeout": limits.idle_timeout})
    if workers > 1:
        if model_spec is None:
            raise ValueError("serve(workers > 1) needs model_spec: each worker process loads the model")
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ[SERVE_SETTINGS] = json.dumps({
            "model": model_spec, "tracking_uri": tracking_uri, "gate": gate_mode, "threads": threads,
            "limits": {k: v for k, v in limits.as_dict().items() if k != "memory_bound_bytes"},
            "batching": {"max_batch": batching.max_batch, "wait_s": batching.wait_s},
        })  # fmt: skip
        uvicorn.run("medclass.inference.serve:app_from_environment", factory=True, workers=workers, host=host,
                    port=port, log_level="info", http="medclass.inference.serve:WorkerH11Protocol")  # fmt: skip
        return
    warm_up(predictor, gate_mode)
    app = create_app(predictor, limits, gate_mode=gate_mode, batching=batching)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", http=protocol)).run()
