"""Fuzzing /predict with hypothesis: random bytes, real X-ray files truncated or with flipped bytes, synthetic images
of any mode, size and format, odd file names and query values. Every request must end in a handled answer (200
with valid probabilities, or 409/413/422 with a reason), never a server error, and the service keeps answering.
The app is the real FastAPI app with a real model, called in-process through its ASGI interface."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medclass import load_config, run_experiment
from medclass.inference.predictor import load_predictor
from medclass.inference.serve import create_app
from medclass.inference.service_limits import ServiceLimits

REPO = Path(__file__).resolve().parents[2]
HANDLED = {200, 409, 413, 422}


@pytest.fixture(scope="module")
def client(module_tmp: Path) -> TestClient:
    config = load_config(
        REPO / "configs" / "chest_xray.yaml",
        [f"output_dir={module_tmp}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.progress_bar=false", "data.input_size=32", "evaluation.bootstrap=0", "evaluation.report=false"],
    )  # fmt: skip
    limits = ServiceLimits(max_upload_bytes=200_000, max_pixels=1_000_000, max_decode_bytes=24 * 2**20)
    app = create_app(load_predictor(run_experiment(config).run_dir), limits)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def xray_bytes(data_dir: Path) -> bytes:
    return sorted((data_dir / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[0].read_bytes()


@st.composite
def synthetic_images(draw) -> bytes:
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "I;16", "P", "1", "CMYK", "F", "LA"]))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"]))
    seed = draw(st.integers(0, 2**31 - 1))
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode the format cannot store: send it as TIFF
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF")
    return buffer.getvalue()


@st.composite
def damaged_xray(draw, original: bytes) -> bytes:
    data = bytearray(original[: draw(st.integers(0, len(original)))])
    for _ in range(draw(st.integers(0, 20))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def _check(response) -> None:
    assert response.status_code in HANDLED, (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 200:
        probabilities = np.array(list(body["probabilities"].values()))
        assert np.all(np.isfinite(probabilities)) and abs(probabilities.sum() - 1.0) < 1e-4
        assert body["predicted"] in body["probabilities"]  # one class of the model (a binary model here)
    else:
        assert isinstance(body["detail"], str | list) and body["detail"]


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_fuzzed_uploads_are_always_handled(client: TestClient, xray_bytes: bytes, data) -> None:
    content = data.draw(st.one_of(st.binary(max_size=4000), synthetic_images(), damaged_xray(xray_bytes)))
    name = data.draw(st.text(max_size=40))
    params = data.draw(st.fixed_dictionaries({}, optional={
        "heatmap": st.one_of(st.booleans(), st.text(max_size=6)),
        "calibrated": st.one_of(st.booleans(), st.text(max_size=6)),
    }))  # fmt: skip
    _check(client.post("/predict", files={"file": (name or "upload", content)}, params=params))


@FUZZ
@given(field=st.text(min_size=1, max_size=10), body=st.binary(max_size=500))
def test_fuzzed_form_fields_are_always_handled(client: TestClient, field: str, body: bytes) -> None:
    _check(client.post("/predict", files={field: ("x.png", body)}))


def test_service_still_answers_after_the_fuzzing(client: TestClient, xray_bytes: bytes) -> None:
    response = client.post("/predict", files={"file": ("xray.jpeg", xray_bytes)})
    assert response.status_code == 200 and set(response.json()["probabilities"]) == {"NORMAL", "PNEUMONIA"}
    assert client.get("/health").json()["status"] == "ok"
