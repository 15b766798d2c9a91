"""What a run ran on: Python, platform, package versions, device, seed, git commit and command line."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "medclass", "torch", "torchvision", "timm", "lightning", "torchmetrics",
    "numpy", "scikit-learn", "pydantic", "medmnist",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``path`` (medclass's own source), or None."""

    # GIT_OPTIONAL_LOCKS=0: `git status` would otherwise refresh the index under .git/index.lock, and a run killed
    # at that moment (kill -9 of a job, a test's SIGKILL) left the lock behind, and every later git command in the
    # user's checkout refused to run.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10, check=True, env=env
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def device_description() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def collect_environment(seed: int) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "packages": package_versions(),
        "device": device_description(),
        "seed": seed,
        "git": git_commit(Path(__file__).resolve().parent),
        "command": sys.argv,
    }
