"""`medclass serve` for real: a server process on loopback, real images posted to it, bad uploads refused with a
clear 4xx while it keeps serving, and the web page driven by a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
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
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
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
    # one class, a string, as in predictions.csv; the rule that chose it is named (calibrated: the threshold)
    assert body["file"] == xray.name and body["predicted"] in ("NORMAL", "PNEUMONIA")
    assert "operating threshold chosen on validation" in body["decision_rule"]
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


def _browser(playwright):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the browser test needs Debian's chromium package (apt-get install chromium)"
    return playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])


def _predict_on_page(page, url: str, image: Path, calibrated: bool = False) -> None:
    page.goto(url)
    page.wait_for_function("document.getElementById('model').textContent.includes('chest_xray')")
    if calibrated:
        page.check("#calibrated")
    page.set_input_files("#file", str(image))
    page.click("#submit")
    page.wait_for_selector("#output:not([hidden])", timeout=60_000)


@pytest.mark.parametrize("width", [820, 1280])
def test_page_in_a_real_browser(server: str, xray: Path, width: int) -> None:
    from playwright.sync_api import sync_playwright

    expected = post(server, xray.name, xray.read_bytes()).json()["predicted"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"serve_page_{width}.png"
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": width, "height": 900})
        _predict_on_page(page, server, xray)
        assert page.inner_text("#prediction") == expected
        # what the decisions mean: the positive class and the calibrated threshold, and the rule used here
        decisions = page.inner_text("#decisions")
        assert "Positive class: PNEUMONIA" in decisions and "P(PNEUMONIA) > 0." in decisions
        assert page.inner_text("#rule") == "Decision rule: the most probable class."
        # the heatmap beside the image (not wrapped under it), with its colour legend
        assert page.is_visible("#heatmap-image") and page.is_visible(".legend")
        image, heatmap = page.locator("#preview").bounding_box(), page.locator("#heatmap-image").bounding_box()
        assert abs(image["y"] - heatmap["y"]) < 2 and heatmap["x"] >= image["x"] + image["width"]
        assert "low" in page.inner_text("#heatmap-legend") and "high" in page.inner_text("#heatmap-legend")
        assert page.inner_text("#top").count("\n") >= 1  # both classes listed with their probabilities
        page.screenshot(path=str(shot), full_page=True)
        page.set_input_files("#file", {"name": "x.png", "mimeType": "image/png", "buffer": b"not an image"})
        page.click("#submit")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "not a readable image" in page.inner_text("#error")
        browser.close()
    with Image.open(shot) as picture:
        assert np.asarray(picture).std() > 5


def test_page_explains_a_calibrated_decision_that_is_not_the_top_class(
    chest_run: Path, server: str, xray: Path, tmp_path: Path
) -> None:
    """A package whose operating threshold sits between the image's P(PNEUMONIA) and 0.5 (as a threshold chosen
    for sensitivity can): the calibrated answer differs from the most probable class, and the page says why."""
    from playwright.sync_api import sync_playwright
    from serving import start_server

    body = post(server, xray.name, xray.read_bytes(), calibrated="true").json()
    p = body["probabilities"]["PNEUMONIA"]
    package = tmp_path / "package"
    shutil.copytree(chest_run / "model", package)
    manifest = json.loads((package / "medclass-model.json").read_text())
    manifest["calibration"].update(threshold=p / 2 if p < 0.5 else (p + 1) / 2, temperature=1.0)
    (package / "medclass-model.json").write_text(json.dumps(manifest))
    other = start_server(package, tmp_path / "tmp")
    try:
        answer = post(other.url, xray.name, xray.read_bytes(), calibrated="true").json()
        top = max(answer["probabilities"], key=answer["probabilities"].get)
        assert answer["predicted"] != top and "although" in answer["explanation"]
        with sync_playwright() as playwright:
            browser = _browser(playwright)
            page = browser.new_page(viewport={"width": 1024, "height": 900})
            _predict_on_page(page, other.url, xray, calibrated=True)
            assert page.inner_text("#prediction") == answer["predicted"]
            assert page.is_visible("#explanation")
            assert f"so the answer is {answer['predicted']} although {top} is more probable" in page.inner_text(
                "#explanation"
            )
            page.screenshot(path=str(ARTIFACTS / "serve_page_threshold.png"), full_page=True)
            browser.close()
    finally:
        other.process.terminate()
        other.process.wait(timeout=30)
    log = other.process.stdout.read()
    assert "Traceback" not in log, log[-2000:]
