"""`medclass serve` for real: a server process on loopback, real images posted to it, bad uploads refused with a
clear 4xx while it keeps serving, and the web page driven by a real headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serving import post

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def test_health_and_model(server: str) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    model = httpx.get(f"{server}/model").json()
    assert model["classes"] == ["NORMAL", "PNEUMONIA"] and model["task"] == "binary"
    assert model["source"]["dataset"] == "chest_xray" and model["heatmaps"] is True
    limits = model["limits"]
    assert limits["max_upload_bytes"] == 1024 * 1024 and limits["max_pixels"] == 4000000
    assert limits["concurrency"] == 1 and limits["queue"] == 1 and limits["memory_bound_bytes"] > 0


def test_predict_a_real_xray_with_heatmap(server: str, xray: Path) -> None:
    response = post(server, xray.name, xray.read_bytes(), heatmap="true", calibrated="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == xray.name and body["predicted"][0] in ("NORMAL", "PNEUMONIA")
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert [t["class"] for t in body["top"]] == sorted(body["probabilities"], key=lambda c: -body["probabilities"][c])
    with Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"]))) as heatmap:
        assert heatmap.format == "PNG" and heatmap.size[0] >= 224


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


BAD_UPLOADS = {
    "text file": ("notes.png", b"this is not an image", 422, "not a readable image"),
    "truncated jpeg": ("cut.jpeg", None, 422, "not a readable image"),
    "empty file": ("empty.png", b"", 422, "empty"),
    "oversized upload": ("big.bin", os.urandom(1024 * 1024 + 10), 413, "larger than the limit"),
    "decompression bomb": ("bomb.png", png_bytes(Image.new("L", (2500, 2500))), 413, "over the limit"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_clear_4xx_and_the_service_keeps_serving(server: str, xray: Path, case: str) -> None:
    name, content, status, message = BAD_UPLOADS[case]
    if content is None:
        content = xray.read_bytes()[:2000]
    response = post(server, name, content)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert post(server, xray.name, xray.read_bytes()).status_code == 200  # still serving


def test_request_without_a_file(server: str) -> None:
    response = httpx.post(f"{server}/predict", timeout=30)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_page_in_a_real_browser(server: str, xray: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the browser test needs Debian's chromium package (apt-get install chromium)"
    expected = post(server, xray.name, xray.read_bytes()).json()["predicted"][0]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 900})
        page.goto(server)
        page.wait_for_function("document.getElementById('model').textContent.includes('chest_xray')")
        page.set_input_files("#file", str(xray))
        page.click("#submit")
        page.wait_for_selector("#output:not([hidden])", timeout=60_000)
        assert page.inner_text("#prediction") == expected
        assert page.is_visible("#heatmap-image")
        assert page.inner_text("#top").count("\n") >= 1  # both classes listed with their probabilities
        page.screenshot(path=str(ARTIFACTS / "serve_page.png"), full_page=True)
        page.set_input_files("#file", {"name": "x.png", "mimeType": "image/png", "buffer": b"not an image"})
        page.click("#submit")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "not a readable image" in page.inner_text("#error")
        browser.close()
    with Image.open(ARTIFACTS / "serve_page.png") as shot:
        assert np.asarray(shot).std() > 5
