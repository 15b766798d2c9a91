"""Read any image file into a uint8 array of a fixed size: every PIL mode, EXIF orientation, 16-bit greys.

PIL does the decoding; what is written here is the policy a medical dataset needs and no library states in one
place: which modes count as grey, how 16-bit and float images become 8-bit, how alpha is dropped, and the three
ways to reach a square size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
ResizeMode = Literal["squash", "crop", "pad"]

# Errors PIL raises for files that are not images, are truncated, or are decompression bombs.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def header_mode(path: str | Path) -> str:
    """The PIL mode from the file header only (no pixel decoding)."""
    with Image.open(path) as image:
        return image.mode


def to_8bit(image: Image.Image) -> Image.Image:
    """L or RGB, 8 bits per channel. 16-bit and float images are stretched from the min..max of their finite
    pixels to 0..255 (the usual display of X-ray and MRI exports); NaN pixels become 0 and +/-inf the ends of the
    range; an image with no finite pixel at all is refused. Alpha is dropped; palettes and CMYK become RGB."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(array)
        if not finite.any():
            raise ValueError("no finite pixel value (every pixel is NaN or infinite)")
        low, high = float(array[finite].min()), float(array[finite].max())
        array = np.nan_to_num(array, nan=low, posinf=high, neginf=low)
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    if mode in ("1", "LA", "La", "L"):
        return image.convert("L")
    if mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def fit_square(image: Image.Image, size: int, resize: ResizeMode) -> Image.Image:
    """Resize to size x size: squash (ignore the aspect ratio), crop (centre crop), or pad (black borders)."""
    if resize == "squash":
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if resize == "crop":
        return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=0)


def load_image(path: str | Path, size: int, resize: ResizeMode = "squash", channels: int = 3) -> np.ndarray:
    """Decode ``path`` to a (size, size, channels) uint8 array, honouring EXIF orientation."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB" if image.mode != "L" else "L", (size, size))  # decode at a reduced scale when possible
        image.load()
        image = ImageOps.exif_transpose(image)
        image = fit_square(to_8bit(image), size, resize)
        image = image.convert("L" if channels == 1 else "RGB")
        array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array
