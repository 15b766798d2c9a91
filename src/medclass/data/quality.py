"""Image-quality measures for the gate that sits in front of a model: sharpness, noise, brightness, contrast and
resolution, with limits fitted on the training images.

No maintained library fits: piq and pyiqa give learned or full-reference quality scores (BRISQUE, NIQE, SSIM)
that neither say *what* is wrong nor were made for X-rays or microscopy. The measures here are the classic
documented formulas, computed on the grey image at the size the model reads (so limits and measures agree):

- sharpness: the variance of the Laplacian (Pech-Pacheco et al. 2000); low when blurred.
- noise: Immerkaer's estimate of the noise standard deviation ("Fast noise variance estimation", 1996): the mean
  absolute response to a kernel that cancels smooth image structure, times sqrt(pi/2)/6. High when noisy; low when
  the fine texture every real image has was smoothed away (blur, heavy JPEG compression, up-scaling).
- brightness: the mean grey level (0-255); contrast: the standard deviation of grey levels (RMS contrast).
- saturated: the share of pixels at 250 or more (clipped highlights: over-exposure).
- resolution: the source image's shorter side in pixels (read from the file, before resizing).

A measure fails when it lies outside the range of the training images (their 0.5th to 99.5th percentile) by more
than ``MARGIN`` of that range (in log units for the scale measures), and by at least ``SLACK`` for the level
measures. The rates at which this catches the data builder's degradations, and passes clean images, are measured
by ``medclass evaluate RUN --ood`` and recorded in the README.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

MEASURES = ("sharpness", "noise", "brightness", "contrast", "saturated")
LOW_QUANTILE, HIGH_QUANTILE = 0.005, 0.995
MARGIN = 0.1  # how far past the training range (as a share of it, in log units for the scale measures) fails
SLACK = {"brightness": 5.0, "saturated": 0.02}  # at least this far: grey levels; share of pixels
# which side of each measure's range means trouble, and how it is said
LIMITS = {
    "sharpness": {"low": "too blurred"},
    "noise": {"low": "too smooth (blurred, compressed or up-scaled)", "high": "too noisy"},
    "brightness": {"low": "too dark", "high": "too bright"},
    "contrast": {"low": "too little contrast"},
    "saturated": {"high": "over-exposed"},
}
LOG_SCALE = {"sharpness", "noise", "contrast"}  # positive measures whose spread is a ratio
TOO_SMALL = "too small"

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]).view(1, 1, 3, 3)


def measure(images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Each measure for a uint8 (B, C, H, W) batch, as float64 arrays of length B."""
    grey = torch.tensor(np.asarray(images)).float().mean(dim=1, keepdim=True)  # a copy: decoded images may be read-only
    height, width = grey.shape[-2:]
    if height < 3 or width < 3:
        zeros = np.zeros(len(grey))
        return {"sharpness": zeros, "noise": zeros, **_levels(grey)}
    laplacian = F.conv2d(grey, _LAPLACE)
    noise = (
        F.conv2d(grey, _IMMERKAER).abs().sum(dim=(1, 2, 3)) * math.sqrt(math.pi / 2) / (6 * (width - 2) * (height - 2))
    )
    return {
        "sharpness": laplacian.flatten(1).var(dim=1).double().numpy(),
        "noise": noise.double().numpy(),
        **_levels(grey),
    }


def _levels(grey: torch.Tensor) -> dict[str, np.ndarray]:
    flat = grey.flatten(1)
    return {
        "brightness": flat.mean(dim=1).double().numpy(),
        "contrast": flat.std(dim=1).double().numpy(),
        "saturated": (flat >= 250).double().mean(dim=1).numpy(),
    }


def fit_limits(measures: dict[str, np.ndarray], short_sides: np.ndarray) -> dict[str, Any]:
    """Limits from the training images' measures and source sizes (JSON-ready, stored in the model package)."""
    limits: dict[str, Any] = {}
    for name, sides in LIMITS.items():
        values = np.asarray(measures[name], dtype=np.float64)
        log = name in LOG_SCALE
        if log:
            values = np.log(np.maximum(values, 1e-6))
        low, high = np.quantile(values, [LOW_QUANTILE, HIGH_QUANTILE])
        reach = max(MARGIN * (high - low), SLACK.get(name, 0.0))
        bounds = {"low": low - reach, "high": high + reach}
        limits[name] = {side: float(np.exp(bounds[side]) if log else bounds[side]) for side in sides}
    sides = np.asarray(short_sides, dtype=np.float64)
    # an image needing more than twice the up-scaling of (nearly) every training image
    limits["resolution"] = {"low": float(max(4.0, np.quantile(sides, 0.01) / 2)) if len(sides) else 4.0}
    return limits


def verdicts(measures: dict[str, np.ndarray], short_sides: list[int | None], limits: dict[str, Any]) -> list[list[str]]:
    """What is wrong with each image (an empty list: nothing), in the order of ``LIMITS``."""
    problems: list[list[str]] = [[] for _ in short_sides]
    for name, sides in LIMITS.items():
        bounds = limits.get(name, {})
        for i, value in enumerate(measures[name]):
            if "low" in sides and "low" in bounds and value < bounds["low"]:
                problems[i].append(sides["low"])
            if "high" in sides and "high" in bounds and value > bounds["high"]:
                problems[i].append(sides["high"])
    smallest = limits.get("resolution", {}).get("low")
    for i, side in enumerate(short_sides):
        if smallest is not None and side is not None and side < smallest:
            problems[i].append(TOO_SMALL)
    return problems


def limits_problem(limits: Any) -> str | None:
    """What in stored limits is not a finite number where one is needed; None when sound."""
    if not isinstance(limits, dict):
        return "quality limits must be a mapping"
    for name in (*LIMITS, "resolution"):
        bounds = limits.get(name, {})
        if not isinstance(bounds, dict):
            return f"quality limits of {name} must be a mapping"
        for side, value in bounds.items():
            if side not in ("low", "high") or isinstance(value, bool) or not isinstance(value, int | float):
                return f"quality limit {name}.{side} {value!r} is not a number"
            if not math.isfinite(value):
                return f"quality limit {name}.{side} is not finite"
    return None
