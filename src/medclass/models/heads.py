"""Classifier heads, chosen by ``model.head.type`` from the head registry (medclass.registry.HEADS).

A head is registered with :func:`register_head`: a builder ``(in_features, num_classes, head_config) -> module``.
Most heads take the backbone's pooled features (batch, width). A head registered with ``feature_map=True`` takes
the backbone's feature map (batch, width, h, w) instead and does its own pooling (GeM, attention pooling); it
must then have a ``pool(feature_map) -> (batch, width)`` method, which gives the features that ``medclass features``
exports. Feature-map heads need a timm backbone (timm can leave the pooling out; HuggingFace models pool inside).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from medclass.config.model import HeadConfig
from medclass.registry import HEADS

HeadBuilder = Callable[[int, int, HeadConfig], nn.Module]


@dataclass(frozen=True)
class HeadSpec:
    build: HeadBuilder
    feature_map: bool = False  # the head pools the backbone's feature map itself


def register_head(name: str, feature_map: bool = False) -> Callable[[HeadBuilder], HeadBuilder]:
    def decorator(build: HeadBuilder) -> HeadBuilder:
        HEADS.register(name)(HeadSpec(build, feature_map))
        return build

    return decorator


def head_spec(config: HeadConfig) -> HeadSpec:
    return HEADS.lookup(config.type, "model.head.type")


@register_head("linear")
def linear_head(in_features: int, num_classes: int, config: HeadConfig) -> nn.Module:
    return nn.Linear(in_features, num_classes)


@register_head("mlp")
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
    return head_spec(config).build(in_features, num_classes, config)
