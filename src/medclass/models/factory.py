"""Build classification networks from the config: any timm model name.

``create_model`` validates the name (suggesting close ones), sets the number of outputs and input channels, and
turns failures a user can fix (unknown name, bad keyword, weights that cannot be fetched) into one-line errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
from torch import nn

from medclass.config.schema import ModelConfig
from medclass.errors import ModelError, suggest


def check_model_name(name: str) -> str:
    """Return the timm architecture of ``name`` (``arch`` or ``arch.pretrained_tag``) or raise with suggestions."""
    arch, _tag = timm.models.split_model_name_tag(name)
    if not timm.is_model(arch):
        raise ModelError(f"model.name: timm has no model {name!r}{suggest(arch, timm.list_models(), n=5)}")
    return arch


def create_model(config: ModelConfig, num_classes: int) -> nn.Module:
    """A timm model with ``num_classes`` outputs and ``config.in_chans`` input channels."""
    check_model_name(config.name)
    kwargs = dict(config.kwargs)
    kwargs.update(num_classes=num_classes, in_chans=config.in_chans, drop_rate=config.drop_rate)
    if config.drop_path_rate is not None:
        kwargs["drop_path_rate"] = config.drop_path_rate
    try:
        return timm.create_model(config.name, pretrained=config.pretrained, **kwargs)
    except TypeError as exc:
        raise ModelError(f"model.kwargs: {config.name} rejects its arguments ({exc}); check model.kwargs") from None
    except Exception as exc:
        if not config.pretrained:
            raise
        # Weight downloads fail in many ways (DNS, HTTP, hub cache misses); all mean the same thing to the user.
        raise ModelError(
            f"model.pretrained: could not get pretrained weights for {config.name} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            "connect to the internet once to cache them, or set model.pretrained=false"
        ) from None


def default_normalization(model: nn.Module, config: ModelConfig) -> tuple[Sequence[float], Sequence[float]]:
    """Mean/std the model expects: its pretrained weights' statistics, or 0.5/0.5 (MedMNIST's) when from scratch."""
    if config.pretrained:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean"), cfg.get("std")
        if mean and std:
            if config.in_chans == 1:
                return (sum(mean) / len(mean),), (sum(std) / len(std),)
            return tuple(mean), tuple(std)
    return (0.5,) * config.in_chans, (0.5,) * config.in_chans
