"""Test-time image corruptions at five severities, after MedMNIST-C (Di Salvo et al., 2024): the degradations
medical images really suffer (acquisition noise, blur, exposure and contrast errors, compression, low resolution),
applied to whole uint8 batches (N, H, W, C) to measure how a model's metrics fall as quality drops.

Hand-written with numpy/scipy/PIL: the `medmnistc` package pins old medmnist and scikit-image releases and needs
ImageMagick. Severity parameters follow MedMNIST-C's ranges; sizes (blur radius, pixel block) scale with the image
side so 28 px and 224 px images degrade alike.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from medclass.errors import UserError
from medclass.registry import CORRUPTIONS

SEVERITIES = (1, 2, 3, 4, 5)
Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
register_corruption = CORRUPTIONS.register


def _level(values: tuple[float, ...], severity: int) -> float:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity}")
    return values[severity - 1]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


@register_corruption("gaussian_noise")
def gaussian_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = _level((0.04, 0.08, 0.12, 0.18, 0.26), severity)
    x = _unit(images)
    return _to_uint8(x + rng.normal(0.0, sigma, x.shape).astype(np.float32))


@register_corruption("speckle_noise")
def speckle_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise, as in ultrasound and OCT."""
    sigma = _level((0.05, 0.15, 0.2, 0.35, 0.45), severity)
    x = _unit(images)
    return _to_uint8(x + x * rng.normal(0.0, sigma, x.shape).astype(np.float32))


@register_corruption("impulse_noise")
def impulse_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: dead and saturated detector pixels."""
    amount = _level((0.01, 0.03, 0.06, 0.09, 0.17), severity)
    out = images.copy()
    hit = rng.random(images.shape[:3]) < amount
    salt = rng.random(images.shape[:3]) < 0.5
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


@register_corruption("gaussian_blur")
def gaussian_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = _level((0.015, 0.025, 0.035, 0.05, 0.07), severity) * images.shape[1]
    return ndimage.gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0)).round().astype(np.uint8)


@register_corruption("brightness_up")
def brightness_up(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(_unit(images) * _level((1.1, 1.2, 1.3, 1.4, 1.5), severity))


@register_corruption("brightness_down")
def brightness_down(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(_unit(images) * _level((0.9, 0.8, 0.7, 0.6, 0.5), severity))


@register_corruption("contrast_down")
def contrast_down(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factor = _level((0.8, 0.7, 0.6, 0.5, 0.4), severity)
    x = _unit(images)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return _to_uint8((x - mean) * factor + mean)


@register_corruption("gamma")
def gamma(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A wrong display/exposure curve (X-ray windowing)."""
    return _to_uint8(_unit(images) ** _level((1.2, 1.4, 1.6, 1.8, 2.2), severity))


def _per_image(images: np.ndarray, change: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    grey = images.shape[-1] == 1
    out = np.empty_like(images)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if grey else image)
        result = np.asarray(change(pil))
        out[i] = result[..., None] if grey else result
    return out


@register_corruption("jpeg")
def jpeg(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = int(_level((50, 30, 15, 10, 7), severity))

    def compress(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert(image.mode)

    return _per_image(images, compress)


@register_corruption("pixelate")
def pixelate(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Low resolution: down-sampled by the factor, shown at the original size."""
    factor = _level((0.8, 0.6, 0.5, 0.4, 0.3), severity)
    height, width = images.shape[1:3]
    small = (max(1, round(width * factor)), max(1, round(height * factor)))

    def coarse(image: Image.Image) -> Image.Image:
        return image.resize(small, Image.Resampling.BOX).resize((width, height), Image.Resampling.NEAREST)

    return _per_image(images, coarse)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (N, H, W, C) uint8 under the named corruption; the random draws depend on the seed alone."""
    corruption = CORRUPTIONS.lookup(name, "--corruptions")
    _level(SEVERITIES, severity)  # checks the severity
    rng = np.random.default_rng([seed, SEVERITIES.index(severity), sorted(CORRUPTIONS).index(name)])
    return corruption(images, severity, rng)


def parse_corruptions(text: str) -> list[str]:
    """ "all" or a comma-separated list of registered corruption names."""
    if text.strip() in ("", "all"):
        return sorted(CORRUPTIONS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        CORRUPTIONS.lookup(name, "--corruptions")
    return names


def parse_severities(text: str) -> tuple[int, ...]:
    """Comma-separated severities (1-5), sorted, each once."""
    try:
        levels = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise UserError(f"--severities {text!r}: give numbers from 1 to 5 separated by commas") from None
    for severity in levels:
        if severity not in SEVERITIES:
            raise UserError(f"--severities: {severity} is not a severity; use values from 1 to {max(SEVERITIES)}")
    return levels
