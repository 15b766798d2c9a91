from __future__ import annotations

import pytest
import torch

from medclass.config import ModelConfig
from medclass.errors import ModelError
from medclass.models import create_model, default_normalization


def test_any_timm_name_with_classes_and_channels() -> None:
    model = create_model(ModelConfig(name="resnet18", in_chans=1), num_classes=5)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    vit = create_model(ModelConfig(name="test_vit", kwargs={"img_size": 32}), num_classes=3)
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_stem_is_left_as_timm_builds_it() -> None:
    model = create_model(ModelConfig(name="resnet18"), num_classes=2)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ModelError, match=r"model.name: timm has no model 'resnt18' \(did you mean resnet18"):
        create_model(ModelConfig(name="resnt18"), num_classes=2)


def test_bad_kwargs_name_the_field() -> None:
    with pytest.raises(ModelError, match="model.kwargs"):
        create_model(ModelConfig(name="resnet18", kwargs={"no_such_option": 1}), num_classes=2)


def test_normalisation_defaults() -> None:
    config = ModelConfig(name="resnet18")
    assert default_normalization(create_model(config, 2), config) == ((0.5,) * 3, (0.5,) * 3)
