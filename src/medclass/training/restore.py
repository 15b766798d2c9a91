"""Restore the LightningModule from a checkpoint (read safely by medclass.training.network, which restores the
network alone for export and prediction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medclass.config.schema import ExperimentConfig
from medclass.training.module import ClassificationModule
from medclass.training.network import checkpoint_info, load_weights, read_checkpoint


def load_module(
    config: ExperimentConfig, task: str, classes: list[str], checkpoint_path: Path
) -> tuple[ClassificationModule, dict[str, Any]]:
    """The module the config describes with the checkpoint's weights, in eval mode, and the checkpoint's metadata."""
    checkpoint = read_checkpoint(checkpoint_path)
    meta = checkpoint.get("medclass", {})
    module = ClassificationModule.from_config(config, task, classes, meta.get("mean"), meta.get("std"))  # type: ignore[arg-type]
    load_weights(module, checkpoint["state_dict"], checkpoint_path)
    return module, checkpoint_info(checkpoint)
