"""ResNets for 28-64 px images (MedMNIST), as the MedMNIST paper trains them: the CIFAR stem.

timm's ResNets have the ImageNet stem (7x7 stride-2 convolution, then a stride-2 max-pool): a 28 px image leaves
layer 4 with a 1x1 feature map. The MedMNIST paper's "ResNet-18 (28)" and "ResNet-50 (28)" use the CIFAR variant
instead (3x3 stride-1 convolution, no max-pool; layer 4 sees 4x4), about 16x the compute and a clearly better model
at that size. timm has no option for a stride-1 stem (``stem_type`` and ``replace_stem_pool`` keep the stride 4), so
these builders take timm's ResNet and swap its stem; they are registered in timm's own model registry, so
``resnet18_cifar`` works wherever a timm name does (``model.name``, ``timm.create_model``, ``--models`` lists).
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import register_model
from timm.models.resnet import ResNet
from torch import nn

#: The models this module adds to timm's registry, with the timm model whose blocks they share.
SMALL_INPUT_MODELS = {"resnet18_cifar": "resnet18", "resnet50_cifar": "resnet50"}


def _with_cifar_stem(model: ResNet) -> ResNet:
    in_chans = model.conv1.in_channels
    width = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    # Keep timm's feature metadata honest: the stem no longer reduces, so every stage is 4x finer.
    for info in model.feature_info:
        info["reduction"] = max(1, info["reduction"] // 4)
    return model


def _build(base: str, pretrained: bool, kwargs: dict[str, Any]) -> ResNet:
    if pretrained:
        raise ValueError("CIFAR-stem ResNets have no pretrained weights; set model.pretrained=false")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = _with_cifar_stem(timm.create_model(base, pretrained=False, **kwargs))
    # The base model's config names ImageNet weights and 224 px; these models have no weights and want 28 px.
    cfg = dict(model.pretrained_cfg)
    cfg.update(
        architecture=f"{base}_cifar",
        input_size=(3, 28, 28),
        test_input_size=None,
        pool_size=(4, 4),
        hf_hub_id=None,
        url=None,
        tag=None,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with the CIFAR stem (3x3 stride-1, no max-pool): the MedMNIST paper's ResNet-18 (28)."""
    return _build("resnet18", pretrained, kwargs)


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with the CIFAR stem: the MedMNIST paper's ResNet-50 (28)."""
    return _build("resnet50", pretrained, kwargs)
