"""HuggingFace image classifiers (``hf:<hub id or local folder>``): any AutoModelForImageClassification, its
classifier replaced by an identity so it returns pooled features; offline, only the local cache or a folder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from medclass.chatter import third_party_wanted
from medclass.config.model import ModelConfig
from medclass.errors import ModelError
from medclass.models.weights import hub_reachable


class HFFeatures(nn.Module):
    """Wraps a transformers model whose classifier is an identity: images in, pooled features out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits.flatten(1)


def _source(config: ModelConfig) -> tuple[str, bool]:
    """(id or folder to load from, whether it is a local folder)."""
    source = str(config.weights) if config.weights is not None else config.bare_name
    return source, Path(source).expanduser().is_dir()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' INFO/WARNING lines ("You passed num_labels ...", the load report) and its progress bars
    ("Loading weights", "Writing model shards") off for medclass's own calls, and back as they were after."""
    from transformers.utils import logging as hf_logging

    if third_party_wanted():  # --verbose
        yield
        return
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def build_hf_backbone(config: ModelConfig) -> tuple[nn.Module, int, int | None, tuple, tuple, str]:
    """(features module, feature width, input size, mean, std, where the weights came from in words). The model's
    own classifier is dropped: medclass's head, built by the caller, replaces it."""
    try:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
    except ImportError:
        raise ModelError("hf: models need the transformers package: pip install transformers") from None
    source, local = _source(config)
    offline = not local and not hub_reachable()
    # The model's own classifier is replaced by medclass's head below, so it is loaded as saved (its own number
    # of labels): no size mismatch to re-initialise and nothing to warn about.
    try:
        if config.wants_pretrained:
            with quiet_transformers():
                model = AutoModelForImageClassification.from_pretrained(
                    source, local_files_only=offline, **config.kwargs
                )
        else:
            hf_config = AutoConfig.from_pretrained(source, local_files_only=offline)
            if hasattr(hf_config, "num_channels"):
                hf_config.num_channels = config.in_chans
            with quiet_transformers():
                model = AutoModelForImageClassification.from_config(hf_config, **config.kwargs)
    except (OSError, ValueError, KeyError) as exc:
        where = "offline and not in the local HuggingFace cache" if offline else str(exc).splitlines()[0][:200]
        raise ModelError(
            f"model.name: cannot load HuggingFace model {source!r} ({where}); give a local folder with "
            "config.json (and weights) as hf:<folder> or model.weights"
        ) from None
    if config.wants_pretrained and config.in_chans != getattr(model.config, "num_channels", 3):
        raise ModelError("model.in_chans: pretrained HuggingFace models keep their input channels; use in_chans 3")
    classifier = getattr(model, "classifier", None)
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)] if classifier is not None else []
    if not linears:
        raise ModelError(f"model.name: {source} has no .classifier Linear layer medclass can replace")
    width = linears[-1].in_features
    model.classifier = nn.Identity()
    size = getattr(model.config, "image_size", None)
    size = int(size[0] if isinstance(size, (list, tuple)) else size) if size else None
    mean, std = (0.5,) * 3, (0.5,) * 3
    try:
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=True)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    except Exception:  # noqa: BLE001 - models without a saved processor use 0.5/0.5
        pass
    if not config.wants_pretrained:
        origin = "none: trained from scratch"
    elif local:
        origin = f"folder {source}"
    else:
        origin = f"HuggingFace hub {source}" + (" (local cache)" if offline else "")
    return HFFeatures(model), width, size, mean, std, origin
