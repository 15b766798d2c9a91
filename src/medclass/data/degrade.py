"""Image degradations for the synthetic LOW_QUALITY class: blur, noise, JPEG artefacts, down-scaling,
over/under-exposure and motion blur. Each takes a PIL image and a numpy Generator, draws its own strength from
the configured range, and returns the degraded image with the parameters it used (recorded in the manifest).

PIL and numpy do the pixel work; motion blur (a line kernel at a random angle) has no PIL filter, so its kernel is
built here and applied with scipy.ndimage.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from medclass.config.build import DegradationRanges
from medclass.data.images import to_8bit
from medclass.registry import DEGRADATIONS

Degradation = Callable[[Image.Image, np.random.Generator, DegradationRanges], tuple[Image.Image, dict[str, Any]]]
register_degradation = DEGRADATIONS.register


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


@register_degradation("blur")
def gaussian_blur(image: Image.Image, rng: np.random.Generator, ranges: DegradationRanges):
    radius = _uniform(rng, ranges.blur_radius) * max(image.size) / 256
    return image.filter(ImageFilter.GaussianBlur(radius)), {"radius_px": round(radius, 2)}


@register_degradation("noise")
def gaussian_noise(image: Image.Image, rng: np.random.Generator, ranges: DegradationRanges):
    sigma = _uniform(rng, ranges.noise_sigma)
    array = np.asarray(image, dtype=np.float32)
    shape = array.shape
    if array.ndim == 3 and (array == array[..., :1]).all():  # grey content in colour channels (most X-ray JPEGs):
        shape = (*array.shape[:2], 1)  # the same noise in every channel, so that grey stays grey
    noisy = np.clip(array + rng.normal(0.0, sigma, shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, mode=image.mode), {"sigma": round(sigma, 1)}


@register_degradation("jpeg")
def jpeg_artefacts(image: Image.Image, rng: np.random.Generator, ranges: DegradationRanges):
    quality = int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert(image.mode), {"quality": quality}


@register_degradation("downscale")
def downscale(image: Image.Image, rng: np.random.Generator, ranges: DegradationRanges):
    factor = _uniform(rng, ranges.downscale_factor)
    small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return image.resize(small, Image.Resampling.BILINEAR).resize(image.size, Image.Resampling.NEAREST), {
        "factor": round(factor, 2)
    }


@register_degradation("exposure")
def exposure(image: Image.Image, rng: np.random.Generator, ranges: DegradationRanges):
    over = bool(rng.integers(0, 2))
    gain = _uniform(rng, ranges.overexposure_gain if over else ranges.underexposure_gain)
    array = np.asarray(image, dtype=np.float32) * gain
    result = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode=image.mode)
    return result, {"kind": "over" if over else "under", "gain": round(gain, 2)}


@register_degradation("motion_blur")
def motion_blur(image: Image.Image, rng: np.random.Generator, ranges: DegradationRanges):
    from scipy import ndimage

    length = int(rng.integers(ranges.motion_length[0], ranges.motion_length[1] + 1)) * max(image.size) // 256
    length = max(3, length | 1)
    angle = float(rng.uniform(0, 180))
    kernel = np.zeros((length, length), dtype=np.float32)
    kernel[length // 2, :] = 1.0
    kernel = ndimage.rotate(kernel, angle, reshape=False, order=1)
    kernel /= kernel.sum()
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        blurred = ndimage.convolve(array, kernel, mode="reflect")
    else:
        blurred = np.stack([ndimage.convolve(array[..., c], kernel, mode="reflect") for c in range(array.shape[2])], -1)
    result = Image.fromarray(np.clip(blurred, 0, 255).astype(np.uint8), mode=image.mode)
    return result, {"length_px": length, "angle_deg": round(angle, 1)}


def degrade(
    image: Image.Image, names: list[str], rng: np.random.Generator, ranges: DegradationRanges
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Apply the named degradations in order; returns the image and one parameter record per step."""
    image = to_8bit(image)
    steps = []
    for name in names:
        image, params = DEGRADATIONS.lookup(name, "low_quality.degradations")(image, rng, ranges)
        steps.append({"name": name, **params})
    return image, steps
