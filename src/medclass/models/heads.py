"""Classifier heads on pooled features, chosen by ``model.head.type``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medclass.config.model import HeadConfig
from medclass.registry import Registry

HEADS: Registry[Callable[[int, int, HeadConfig], nn.Module]] = Registry("head")


@HEADS.register("linear")
def linear_head(in_features: int, num_classes: int, config: HeadConfig) -> nn.Module:
    return nn.Linear(in_features, num_classes)


@HEADS.register("mlp")
def mlp_head(in_features: int, num_classes: int, config: HeadConfig) -> nn.Module:
    """The chest X-ray project's head: LayerNorm -> Dropout -> Linear(hidden) -> ReLU -> Dropout -> Linear."""
    return nn.Sequential(
        nn.LayerNorm(in_features),
        nn.Dropout(config.dropout),
        nn.Linear(in_features, config.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden, num_classes),
    )


def build_head(config: HeadConfig, in_features: int, num_classes: int) -> nn.Module:
    return HEADS.lookup(config.type, "model.head.type")(in_features, num_classes, config)
