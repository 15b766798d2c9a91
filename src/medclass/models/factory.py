"""The model factory: one function builds any configured model as a :class:`Classifier`."""

from __future__ import annotations

from collections.abc import Sequence

from medclass.config.model import ModelConfig
from medclass.errors import ModelError
from medclass.models.classifier import Classifier
from medclass.models.heads import build_head, head_spec
from medclass.models.hf_models import build_hf_backbone
from medclass.models.timm_models import build_timm_backbone, check_timm_name, timm_input_size_and_normalization


def check_model_name(name: str) -> None:
    """Fail fast (with suggestions) on a timm name timm does not know; hf: names are checked when loading."""
    config = ModelConfig(name=name)
    if config.family == "timm":
        check_timm_name(config.bare_name)


def create_model(config: ModelConfig, num_classes: int) -> Classifier:
    """Backbone + head with ``num_classes`` outputs, for ``timm:``/bare names and ``hf:`` ids alike."""
    feature_map = head_spec(config.head).feature_map
    if config.family == "hf":
        if feature_map:
            raise ModelError(f"model.head.type {config.head.type!r} pools a feature map: use a timm model with it")
        backbone, width, size, mean, std, weights = build_hf_backbone(config)
    else:
        backbone, width, weights = build_timm_backbone(config, pooled=not feature_map)
        size, mean, std = timm_input_size_and_normalization(backbone)
    head = build_head(config.head, width, num_classes)
    model = Classifier(backbone, head, width, size, mean, std, config.family)
    model.weights_source = weights  # said in the console and kept in run.json
    return model


def default_normalization(model: Classifier, config: ModelConfig) -> tuple[Sequence[float], Sequence[float]]:
    """Mean/std the model expects: its pretrained weights' statistics, or 0.5/0.5 (MedMNIST's) when from scratch."""
    if config.wants_pretrained:
        mean, std = model.mean, model.std
        if config.in_chans == 1:
            return (sum(mean) / len(mean),), (sum(std) / len(std),)
        return mean, std
    return (0.5,) * config.in_chans, (0.5,) * config.in_chans
