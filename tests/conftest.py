"""Shared fixtures: the real datasets in ../shared/data (or $MEDCLASS_DATA) and small configs over them."""

from __future__ import annotations

import inspect
import os
import re
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def shared_data_path() -> Path:
    return Path(os.environ.get("MEDCLASS_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def shared_data_dir() -> Path:
    path = shared_data_path()
    if not (path / "medmnist").is_dir():
        pytest.exit(f"test data not found at {path}: put ../shared beside the repo or set MEDCLASS_DATA", returncode=4)
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (make test runs one worker per core), each worker and every process it starts gets its
    share of the cores: torch processes that each use every core run several times slower each, not 2x."""
    controller = not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None)
    if controller and config.getoption("markexpr") != "unit" and not (shared_data_path() / "medmnist").is_dir():
        # Workers collect, not this process: a worker's exit would come out as an INTERNALERROR without the message.
        shared_data_dir()  # exits with the message
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})


# What a test does, read from its own code and fixtures, marks its tier (see pyproject.toml's markers).
SUBPROCESS = re.compile(r"\bmedclass\(|\b_cli\(|\bsubprocess\.|start_server\(")
BROWSER = re.compile(r"sync_playwright|chromium")


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the subprocess and browser tiers from what each test runs."""
    for item in items:
        try:
            source = inspect.getsource(item.obj)  # type: ignore[attr-defined]
        except (AttributeError, OSError, TypeError):
            source = ""
        if SUBPROCESS.search(source) or {"server", "service"} & set(item.fixturenames):
            item.add_marker(pytest.mark.subprocess)
        if BROWSER.search(source):
            item.add_marker(pytest.mark.browser)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without ../shared/data only the unit tier can run: say so at once rather than fail test by test."""
    needs_data = any(item.get_closest_marker("unit") is None for item in session.items)
    if needs_data and not (shared_data_path() / "medmnist").is_dir():
        shared_data_dir()  # exits with the message


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def medmnist_dir(data_dir: Path) -> Path:
    return data_dir / "medmnist"


@pytest.fixture(scope="session", autouse=True)
def _data_env(tmp_path_factory: pytest.TempPathFactory):
    """Every test (and every fixture, whatever its scope) sees MEDCLASS_DATA, as a user who followed the README,
    and a preprocessing cache of its own, shared by the session's xdist workers (a folder beside theirs): real
    cache hits are exercised too, and the chest X-ray set is decoded once, not once per worker (the cache's lock
    makes the second worker wait for the first)."""
    base = tmp_path_factory.getbasetemp()
    cache = base.parent / "medclass-cache" if os.environ.get("PYTEST_XDIST_WORKER") else base / "medclass-cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDCLASS_DATA", str(shared_data_path()))
        patch.setenv("MEDCLASS_CACHE", str(cache))
        yield


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A folder for what one test module shares (its runs), removed when the module is done unless a test failed.
    Checkpoints of even a tiny run take hundreds of MB; with pytest's own retention (pyproject.toml: the folders of
    passed tests go at once) the suite never holds more than the session's runs, one module's and one test's."""
    failed = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    if request.session.testsfailed == failed:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def breast_run(tmp_path_factory: pytest.TempPathFactory):
    """A short real BreastMNIST run (2 epochs of the shipped config), shared by the tests that read a binary run."""
    from medclass import load_config, run_experiment

    out = tmp_path_factory.mktemp("breast-runs")
    config = load_config(
        REPO_ROOT / "configs" / "breastmnist.yaml",
        [f"output_dir={out}", "trainer.max_epochs=2", "trainer.progress_bar=false"],
    )
    return run_experiment(config)


@pytest.fixture(scope="session")
def blood_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real BloodMNIST run (8 classes; 25 training batches, no bootstrap or report), shared by the tests
    that read a multi-class run: packages, prediction, ONNX, heatmaps, robustness. Tests add files to it (a
    package, robustness/), never change what is there."""
    from medclass import load_config, run_experiment

    config = load_config(
        REPO_ROOT / "configs" / "bloodmnist.yaml",
        [f"output_dir={tmp_path_factory.mktemp('blood-runs')}", "trainer.max_epochs=1",
         "trainer.limit_train_batches=25", "trainer.progress_bar=false", "evaluation.bootstrap=0",
         "evaluation.report=false"],
    )  # fmt: skip
    return run_experiment(config).run_dir


@pytest.fixture
def quick_overrides(tmp_path: Path) -> list[str]:
    """Overrides that make any shipped config train for one short epoch into tmp_path."""
    return [
        f"output_dir={tmp_path / 'runs'}",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "data.batch_size=64",
        "gate.fit=false",  # the gate's own tests fit it; elsewhere it is a pass over the train split for nothing
    ]


def folder_config(root: Path | str, *overrides: str, **data):
    """An experiment config over an image folder (small images, for speed)."""
    from medclass.config import load_config

    return load_config(
        None, list(overrides), experiment="t", data={"source": "folder", "root": str(root), "input_size": 32, **data}
    )


# The service: one tiny real chest X-ray model and one real server process (small limits, see serving.LIMITS)
# shared by every test that talks to it (tests/inference/test_serve*.py).


@pytest.fixture(scope="session")
def chest_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chest X-ray model (real JPEGs, 32 px) so uploads are real clinical image files."""
    from medclass import load_config, run_experiment

    out = tmp_path_factory.mktemp("runs")
    config = load_config(
        REPO_ROOT / "configs" / "chest_xray.yaml",
        [f"output_dir={out}", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.progress_bar=false",
         "data.input_size=32", "evaluation.bootstrap=0", "evaluation.report=false"],
    )  # fmt: skip
    return run_experiment(config).run_dir


@pytest.fixture(scope="session")
def service(chest_run: Path, tmp_path_factory: pytest.TempPathFactory):
    from serving import LIMITS, start_server

    server = start_server(chest_run, tmp_path_factory.mktemp("server-tmp"), *LIMITS)
    yield server
    server.process.terminate()
    server.process.wait(timeout=30)


@pytest.fixture(scope="session")
def server(service) -> str:
    return service.url


@pytest.fixture(scope="session")
def xray(data_dir: Path) -> Path:
    return sorted((data_dir / "chest_xray" / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
