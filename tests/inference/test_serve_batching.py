"""Dynamic batching in the service (issue 22): concurrent uploads are predicted together and get the answers one
image at a time gives; a broken upload among them fails alone; --workers 2 serves the same answers."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import post, start_server

from medclass.inference.predictor import decode, load_predictor, scored

pytestmark = pytest.mark.subprocess


def one_at_a_time(model: Path, files: list[Path], calibrated: bool = False) -> list[tuple[np.ndarray, float]]:
    predictor = load_predictor(model)
    answers = []
    for file in files:
        probabilities, ood = scored(predictor, decode(predictor, io.BytesIO(file.read_bytes()))[None], False,
                                    calibrated, ood=True)  # fmt: skip
        answers.append((probabilities[0], float(ood[0])))
    return answers


def test_concurrent_uploads_are_batched_with_the_answers_of_one_at_a_time(
    chest_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    files = sorted((data_dir / "chest_xray" / "test").rglob("*.jpeg"))[::40][:12]
    expected = one_at_a_time(chest_run, files)
    broken = files[0].read_bytes()[:300]
    server = start_server(chest_run, tmp_path / "a", "--queue", "32", "--max-batch", "8", "--batch-wait-ms", "50")
    try:
        uploads = [(f.name, f.read_bytes()) for f in files] + [("broken.jpeg", broken)]
        with ThreadPoolExecutor(len(uploads)) as pool:
            replies = list(pool.map(lambda u: post(server.url, *u), uploads))
        assert replies[-1].status_code == 422, "the broken upload fails alone"
        for reply, (probabilities, ood) in zip(replies[:-1], expected, strict=True):
            assert reply.status_code == 200, reply.text
            answer = reply.json()
            got = np.array(list(answer["probabilities"].values()))  # in the model's class order
            assert np.abs(got - probabilities).max() < 1e-5, (got, probabilities)
            assert abs(answer["gate"]["ood_score"] - ood) < 1e-4
        health = httpx.get(f"{server.url}/health").json()
        assert health["images_predicted"] == len(files)
        assert health["batches"] < len(files), f"12 concurrent uploads in {health['batches']} passes: no batching"
        model = httpx.get(f"{server.url}/model").json()
        assert model["batching"] == {"max_batch": 8, "wait_ms": 50.0}
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)

    two = start_server(chest_run, tmp_path / "b", "--workers", "2")
    try:
        for file, (probabilities, _) in zip(files[:4], expected, strict=False):
            answer = post(two.url, file.name, file.read_bytes()).json()
            assert np.abs(np.array(list(answer["probabilities"].values())) - probabilities).max() < 1e-5
    finally:
        two.process.terminate()
        two.process.wait(timeout=30)
