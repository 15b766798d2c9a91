"""The trained network without Lightning: build it from a config, read a checkpoint safely and load its weights.
Exporting a package and predicting need only this, so they do not import Lightning (about 2 s of every
``medclass predict``); the LightningModule (medclass.training.module) builds its network here too.

Checkpoints are read with ``torch.load(weights_only=True)``, never unpickling code, and their format version is
checked."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from medclass.config.schema import ExperimentConfig
from medclass.data.transforms import BatchPreprocess
from medclass.errors import RunDirError
from medclass.models import Classifier, create_model, default_normalization
from medclass.tasks import Task

CHECKPOINT_FORMAT_VERSION = 2


def resolve_normalization(config: ExperimentConfig, net: Classifier) -> tuple[Sequence[float], Sequence[float]]:
    """data.mean/std when given, else what data.normalization names ("dataset" needs the statistics passed in)."""
    data = config.data
    if data.mean is not None and data.std is not None:
        return data.mean, data.std
    if data.normalization == "imagenet":
        return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    if data.normalization == "half":
        return (0.5,) * 3, (0.5,) * 3
    if data.normalization == "dataset":
        raise ValueError("data.normalization=dataset: pass the training split's statistics (medclass.data.stats)")
    return default_normalization(net, config.model)


class TrainedNet(nn.Module):
    """Batch preprocessing + network, named as in the LightningModule (``preprocess.*``, ``net.*``), with the
    checkpoint metadata that describes them."""

    def __init__(self, net: Classifier, preprocess: BatchPreprocess, metadata: dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.preprocess = preprocess
        self.metadata = metadata

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))


def build_network(
    config: ExperimentConfig,
    task: Task,
    classes: list[str],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> TrainedNet:
    """The network and preprocessing the config describes, for a dataset with these classes.

    ``mean``/``std`` are the normalisation to use when already known (the dataset's own statistics, or a
    checkpoint's); otherwise they follow data.mean/std or data.normalization."""
    # The initial weights come from the config's seed alone, whatever drew random numbers before (data
    # loading, cache building, statistics), so a cold and a warm cache give the same model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = create_model(config.model, num_classes=len(classes))
    if mean is None or std is None:
        mean, std = resolve_normalization(config, net)
    if config.model.in_chans == 1 and len(mean) == 3:
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    preprocess = BatchPreprocess(config.model.in_chans, config.data.input_size, mean, std)
    metadata = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "task": task,
        "classes": list(classes),
        "model": config.model.name,
        "head": config.model.head.type,
        "in_chans": config.model.in_chans,
        "input_size": config.data.input_size,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }
    return TrainedNet(net, preprocess, metadata)


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


def checkpoint_info(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The epoch, step and medclass metadata a checkpoint carries."""
    return {
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        **checkpoint.get("medclass", {}),
    }


def load_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], checkpoint_path: Path) -> None:
    """Load a checkpoint's weights strictly; a mismatch is the run's config.yaml not matching its checkpoint."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise RunDirError(
            f"{checkpoint_path} does not match the run's config.yaml ({str(exc).splitlines()[0]}); "
            "was config.yaml edited?"
        ) from None
    module.eval()


def load_network(
    config: ExperimentConfig, task: Task, classes: list[str], checkpoint_path: Path
) -> tuple[TrainedNet, dict[str, Any]]:
    """The network the config describes with the checkpoint's weights (the loss's and metrics' state left out), in
    eval mode, and the checkpoint's metadata."""
    checkpoint = read_checkpoint(checkpoint_path)
    meta = checkpoint.get("medclass", {})
    network = build_network(config, task, classes, meta.get("mean"), meta.get("std"))
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(("net.", "preprocess."))}
    load_weights(network, state, checkpoint_path)
    return network, checkpoint_info(checkpoint)
