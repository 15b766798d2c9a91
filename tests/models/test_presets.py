"""Every model of every preset config builds and runs a forward and backward pass on a tiny input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medclass.config import ModelConfig, load_config
from medclass.models import create_model

pytestmark = pytest.mark.unit  # needs neither ../shared/data nor training

PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs" / "presets").glob("*.yaml"))
ENTRIES = [(p.stem, entry.name) for p in PRESETS for entry in load_config(p).models or []]
TINY = {"vit": {"img_size": 32}, "deit": {"img_size": 32}, "swin": {"img_size": 64, "window_size": 2}}


def test_presets_cover_the_reference_projects() -> None:
    names = {name for _, name in ENTRIES}
    for expected in ("resnet18", "resnet50", "vit_base_patch16_224", "swin_base_patch4_window7_224", "convnextv2_tiny",
                     "convnextv2_base", "tf_efficientnetv2_s", "tf_efficientnetv2_m", "tf_efficientnetv2_l",
                     "regnety_040", "deit_tiny_patch16_224", "mobileone_s3", "mobileone_s4"):  # fmt: skip
        assert expected in names
    assert sum(name.startswith("hf:") for name in names) >= 4


@pytest.mark.parametrize(("preset", "name"), [e for e in ENTRIES if not e[1].startswith("hf:")])
def test_preset_model_forward_backward(preset: str, name: str) -> None:
    kwargs = next((v for k, v in TINY.items() if k in name), {})
    size = kwargs.get("img_size", 64)
    model = create_model(ModelConfig(name=name, kwargs=kwargs, head={"type": "mlp", "hidden": 16}), num_classes=3)
    model.train()
    logits = model(torch.randn(2, 3, size, size))
    logits.sum().backward()
    assert logits.shape == (2, 3)
    assert all(p.grad is not None for p in model.head_parameters())
    assert sum(p.grad is not None for p in model.backbone_parameters()) > 0


@pytest.mark.parametrize(("preset", "name"), [e for e in ENTRIES if e[1].startswith("hf:")])
def test_huggingface_preset_ids_are_well_formed(preset: str, name: str) -> None:
    """Their configs live on the hub, out of reach here; the HF code path is tested with a local folder."""
    owner, _, repo = name.removeprefix("hf:").partition("/")
    assert owner and repo and " " not in name
