"""Fixtures of the service tests: one tiny real chest X-ray model and one real server process (with small limits,
see serving.LIMITS) shared by every test that talks to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import LIMITS, Server, start_server

from medclass import load_config, train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chest_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chest X-ray model (real JPEGs, 32 px) so uploads are real clinical image files."""
    out = tmp_path_factory.mktemp("runs")
    config = load_config(
        REPO / "configs" / "chest_xray.yaml",
        [f"output_dir={out}", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.progress_bar=false",
         "data.image_size=32", "evaluation.bootstrap=0", "evaluation.report=false"],
    )  # fmt: skip
    return train(config).run_dir


@pytest.fixture(scope="session")
def service(chest_run: Path, tmp_path_factory: pytest.TempPathFactory):
    server: Server = start_server(chest_run, tmp_path_factory.mktemp("server-tmp"), *LIMITS)
    yield server
    server.process.terminate()
    server.process.wait(timeout=30)


@pytest.fixture(scope="session")
def server(service: Server) -> str:
    return service.url


@pytest.fixture(scope="session")
def xray(data_dir: Path) -> Path:
    return sorted((data_dir / "chest_xray" / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
