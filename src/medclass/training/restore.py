"""Restore a trained module from a checkpoint, safely: checkpoints are read with ``torch.load(weights_only=True)``,
never unpickling code, and their format version is checked."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from medclass.config.schema import ExperimentConfig
from medclass.errors import RunDirError
from medclass.training.module import CHECKPOINT_FORMAT_VERSION, ClassificationModule


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunDirError(
            f"{path} is damaged or not a safe medclass checkpoint ({first}); retrain or use another checkpoint"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RunDirError(f"{path} is not a Lightning checkpoint (no state_dict)")
    version = checkpoint.get("medclass", {}).get("format_version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise RunDirError(
            f"{path} has checkpoint format version {version!r}; this medclass reads versions up to "
            f"{CHECKPOINT_FORMAT_VERSION}: it was written by a newer medclass, so use that version"
        )
    return checkpoint


def load_module(
    config: ExperimentConfig, task: str, classes: list[str], checkpoint_path: Path
) -> tuple[ClassificationModule, dict[str, Any]]:
    """The module the config describes with the checkpoint's weights, in eval mode, and the checkpoint's metadata."""
    checkpoint = read_checkpoint(checkpoint_path)
    meta = checkpoint.get("medclass", {})
    module = ClassificationModule.from_config(config, task, classes, meta.get("mean"), meta.get("std"))  # type: ignore[arg-type]
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        raise RunDirError(
            f"{checkpoint_path} does not match the run's config.yaml ({str(exc).splitlines()[0]}); "
            "was config.yaml edited?"
        ) from None
    module.eval()
    info = {
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        **checkpoint.get("medclass", {}),
    }
    return module, info
