"""The Dockerfile: what it copies exists and it runs the medclass command; built and run for real wherever a
Docker daemon (and its base image registry) is available."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_dockerfile_copies_what_exists_and_runs_medclass() -> None:
    for source in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, flags=re.M):
        for name in source.split():
            assert (REPO / name).exists(), name
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert 'ENTRYPOINT ["medclass"]' in DOCKERFILE and "medclass" in scripts
    assert "EXPOSE 8000" in DOCKERFILE and "USER medclass" in DOCKERFILE  # serves, and not as root


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not docker_available(), reason="no Docker daemon on this machine")
def test_image_builds_and_runs() -> None:
    build = subprocess.run(["docker", "build", "-q", "-t", "medclass-test", str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run(["docker", "run", "--rm", "medclass-test", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "predict" in run.stdout and "serve" in run.stdout
