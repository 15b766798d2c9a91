"""Read any image file into a uint8 array of a fixed size: every PIL mode, EXIF orientation, 16-bit greys.

PIL does the decoding; what is written here is the policy a medical dataset needs and no library states in one
place: which modes count as grey, how 16-bit and float images become 8-bit, how alpha is dropped, and the three
ways to reach a square size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps

from medclass.data import dicom

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
ResizeMode = Literal["squash", "crop", "pad"]

# Errors PIL raises for files that are not images, are truncated, or are decompression bombs.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError)


def header_mode(path: str | Path) -> str:
    """The PIL mode from the file header only (no pixel decoding); DICOM: L or RGB."""
    if dicom.looks_like_dicom(path):
        return dicom.header_mode(path)
    with Image.open(path) as image:
        return image.mode


def image_dimensions(source: str | Path | BinaryIO) -> tuple[int, int]:
    """(width, height) from the header only; DICOM files included."""
    if dicom.looks_like_dicom(source):
        width, height, _, _ = dicom.decode_bytes(source)
        return width, height
    with Image.open(source) as image:
        return image.size


# Pixels per strip when 16-bit and float images are scaled to 8 bits: the float64 work arrays stay a few MB
# whatever the image size, instead of five full-size copies (37-41 bytes per pixel were measured before).
_STRIP_PIXELS = 1 << 18

# Peak memory of load_image per decoded pixel, by PIL mode: PIL's own buffer (RGB is stored with 4 bytes per
# pixel), the 8-bit copy and the strips. Measured as the process's peak RSS increase over 16 Mpx images of every
# mode (benchmarks/decode_memory.py, results in benchmarks/results/decode_memory.md), rounded up; used to
# refuse an image before it is decoded.
DECODE_BYTES_PER_PIXEL = {"1": 3, "L": 2, "P": 7, "PA": 10, "LA": 6, "La": 6, "RGB": 5, "RGBX": 5, "RGBA": 9,
                          "RGBa": 9, "CMYK": 9, "YCbCr": 9, "LAB": 9, "HSV": 9, "I;16": 6, "I;16L": 6, "I;16B": 6,
                          "I;16N": 6, "I": 8, "F": 8}  # fmt: skip
_UNLISTED_MODE_BYTES = 12
_DECODE_OVERHEAD = 16 * 2**20  # strips, the resized copy and the decoder's buffers


class DecodeBudgetExceeded(ValueError):
    """An image whose decoding would need more memory than allowed; raised from its header, before decoding."""

    def __init__(self, width: int, height: int, mode: str, need: int, limit: int) -> None:
        super().__init__(
            f"decoding this {width}x{height} {mode} image needs about {need / 2**20:.0f} MiB, over the limit of "
            f"{limit / 2**20:.0f} MiB"
        )


def decode_bytes(image: Image.Image) -> int:
    """Memory :func:`load_image` needs for ``image`` (an opened, not yet loaded file), from its header. Only the
    first frame of a multi-frame file is decoded, so further frames cost nothing."""
    width, height = image.size
    return width * height * DECODE_BYTES_PER_PIXEL.get(image.mode, _UNLISTED_MODE_BYTES) + _DECODE_OVERHEAD


def _finite_range(image: Image.Image, strips: list[tuple[int, int]]) -> tuple[float, float]:
    """min and max of the finite pixels of an I/F/I;16 image (PIL's getextrema is exact for integers, but NaN
    makes it meaningless for floats)."""
    if image.mode != "F":
        low, high = image.getextrema()
        return float(low), float(high)
    low, high = np.inf, -np.inf
    for top, bottom in strips:
        array = np.asarray(image.crop((0, top, image.width, bottom)), dtype=np.float64)
        finite = array[np.isfinite(array)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if low > high:
        raise ValueError("no finite pixel value (every pixel is NaN or infinite)")
    return low, high


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
    """I, F and I;16 images to L by a min..max stretch, a strip of rows at a time."""
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    strips = [(top, min(top + rows, height)) for top in range(0, height, rows)]
    low, high = _finite_range(image, strips)
    out = np.empty((height, width), dtype=np.uint8)
    for top, bottom in strips:
        array = np.asarray(image.crop((0, top, width, bottom)), dtype=np.float64)
        np.nan_to_num(array, copy=False, nan=low, posinf=high, neginf=low)
        if high > low:  # in place, the same operations as (array - low) * (255 / (high - low))
            array -= low
            array *= 255.0 / (high - low)
        else:
            array[:] = 0.0
        np.rint(array, out=array)
        out[top:bottom] = np.clip(array, 0, 255, out=array)
    return Image.fromarray(out, mode="L")


def to_8bit(image: Image.Image) -> Image.Image:
    """L or RGB, 8 bits per channel. 16-bit and float images are stretched from the min..max of their finite
    pixels to 0..255 (the usual display of X-ray and MRI exports); NaN pixels become 0 and +/-inf the ends of the
    range; an image with no finite pixel at all is refused. Alpha is dropped; palettes and CMYK become RGB.
    An image already in L or RGB is returned as it is (no copy)."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _stretch_to_8bit(image)
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    return image.convert("RGB")  # P (transparency ignored, as through RGBA), RGBA, CMYK, YCbCr, ...


def fit_square(image: Image.Image, size: int, resize: ResizeMode) -> Image.Image:
    """Resize to size x size: squash (ignore the aspect ratio), crop (centre crop), or pad (black borders)."""
    if resize == "squash":
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if resize == "crop":
        return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    return ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=0)


def load_image(path: str | Path | BinaryIO, size: int, *args: Any, **kwargs: Any) -> np.ndarray:
    """Decode ``path`` to a (size, size, channels) uint8 array; the arguments are :func:`load_image_and_size`'s."""
    return load_image_and_size(path, size, *args, **kwargs)[0]


def load_image_and_size(
    path: str | Path | BinaryIO,
    size: int,
    resize: ResizeMode = "squash",
    channels: int = 3,
    max_decode_bytes: int | None = None,
    dicom_frame: dicom.FrameChoice = "middle",
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` to a (size, size, channels) uint8 array, honouring EXIF orientation, and the source's
    (width, height) as :func:`image_dimensions` gives it (from the same opening of the file: the gate needs the
    size, and reading the header again cost 5% of prediction). With ``max_decode_bytes``, an image that would need
    more memory to decode raises :class:`DecodeBudgetExceeded` from its header, before any pixel is decoded. DICOM
    files (by name or content) are windowed to 8 bits as :mod:`medclass.data.dicom` describes, reading frame
    ``dicom_frame`` of a multi-frame file."""
    if dicom.looks_like_dicom(path):
        if max_decode_bytes is not None:
            width, height, mode, need = dicom.decode_bytes(path)
            if need > max_decode_bytes:
                raise DecodeBudgetExceeded(width, height, mode, need, max_decode_bytes)
        pixels = dicom.load_dicom(path, dicom_frame)
        return _finish(Image.fromarray(pixels), size, resize, channels), (pixels.shape[1], pixels.shape[0])
    with Image.open(path) as image:
        source_size = image.size
        if image.format == "JPEG":
            image.draft("RGB" if image.mode != "L" else "L", (size, size))  # decode at a reduced scale when possible
        if max_decode_bytes is not None and (need := decode_bytes(image)) > max_decode_bytes:
            raise DecodeBudgetExceeded(*image.size, image.mode, need, max_decode_bytes)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy when there is nothing to turn
        return _finish(to_8bit(image), size, resize, channels), source_size


def _finish(image: Image.Image, size: int, resize: ResizeMode, channels: int) -> np.ndarray:
    """An 8-bit L or RGB image at size x size with ``channels`` channels, as a (size, size, channels) array."""
    image = fit_square(image, size, resize).convert("L" if channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array
