"""DICOM files as 8-bit images: pydicom decodes (its pixel-data plugins handle JPEG, JPEG-LS, JPEG 2000 and RLE);
what is written here is the display policy, in the order the DICOM standard's grayscale pipeline gives it
(PS3.3 C.11, PS3.4 N.2):

1. the stored values of one frame (multi-frame: ``frame`` = middle, first or a 0-based number);
2. the modality LUT (rescale slope/intercept, or a modality LUT sequence), in float64, so 12/16-bit data is never
   clipped before windowing;
3. the VOI: a VOI LUT sequence when the file has one, else its first window centre/width (LINEAR, LINEAR_EXACT or
   SIGMOID, as pydicom's ``apply_windowing`` computes it), else a robust window from the 0.5th to the 99.5th
   percentile of the frame's values;
4. 0..255, inverted for MONOCHROME1 (where high values are shown dark);
5. colour images: YBR converted to RGB (pydicom does it when decoding), palette colour through its LUT, samples
   wider than 8 bits scaled by their bit depth.

A file without pixel data (a structured report, an RT plan, a waveform) is refused with its SOP class's name, so a
dataset skips it with that reason like any other unreadable file.

pydicom is used through its public functions; none of them turns a frame into an 8-bit picture in one call (their
windowing output range follows BitsStored), which is why this module exists.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

DICOM_EXTENSIONS = (".dcm", ".dicom")
# Tags read when a dataset asks for a DICOM attribute (grouping, subgroups): the header only, never the pixels.
_HEADER_ONLY = {"stop_before_pixels": True, "force": True}
_PERCENTILES = (0.5, 99.5)
# float64 working copies (modality, windowing, masks) per decoded sample, plus the decoder's own buffers.
DICOM_BYTES_PER_SAMPLE = 40
_DICOM_OVERHEAD = 16 * 2**20
FrameChoice = str | int
T = TypeVar("T")


class DicomError(ValueError):
    """A DICOM file that cannot become an image (no pixel data, undecodable, an unsupported frame)."""


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom logs each failed decoding plugin with a traceback, and warns about padding and odd lengths it
    repairs; the reason a file cannot be used is reported once, by the caller, so both are held back here."""
    logger = logging.getLogger("pydicom")  # the level of its child loggers (pydicom.pixels...) follows it
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _guarded(function: Callable[..., T]) -> Callable[..., T]:
    """A reader of untrusted files, run with pydicom quiet, whose failures all become :class:`DicomError`: pydicom
    parses lazily and raises many types for a malformed file (NotImplementedError for an unknown VR, struct.error,
    BytesLengthException, ValueError for a nonsense value), at any element access."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> T:
        with _quiet_pydicom():
            try:
                return function(*args, **kwargs)
            except (DicomError, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - see above: any parser error means an unusable file
                raise DicomError(f"not a readable DICOM file ({type(exc).__name__}: {_first_line(exc)})") from None

    return guarded


def looks_like_dicom(source: str | Path | BinaryIO) -> bool:
    """A .dcm/.dicom file name, or the "DICM" marker after the 128-byte preamble (files, uploads)."""
    if isinstance(source, (str, Path)):
        if Path(source).suffix.lower() in DICOM_EXTENSIONS:
            return True
        try:
            with open(source, "rb") as handle:
                return handle.read(132)[128:] == b"DICM"
        except OSError:
            return False
    position = source.tell()
    try:
        source.seek(0)  # a file object holds one file from its start (an upload)
        return source.read(132)[128:] == b"DICM"
    finally:
        source.seek(position)


def _read(source: str | Path | BinaryIO, **options: Any):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not isinstance(source, (str, Path)):
        source.seek(0)
    try:
        return pydicom.dcmread(source, **options)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DicomError(f"not a readable DICOM file ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _plugin_reasons(exc: BaseException) -> str:
    """pydicom's decoding error in one line (it lists each plugin's reason on a line of its own), with what to
    install where the only missing piece is the GPL-licensed 12-bit JPEG decoder medclass does not depend on."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = "; ".join(line for line in lines[1:] if ":" in line) or (lines[0] if lines else type(exc).__name__)
    if "12-bit precision" in reasons:
        reasons += "; 12-bit JPEG Extended needs the decoder `pip install pylibjpeg-libjpeg` (GPL-3.0 licensed)"
    return reasons[:400]


def read_header(source: str | Path | BinaryIO):
    """The file's data elements without its pixel data."""
    return _read(source, **_HEADER_ONLY)


def _sop_class(ds) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", None) or "an object of unknown class"


def _require_image(ds, header_only: bool = False) -> None:
    """Refuse a file that is not an image; from a header (read without its pixel data), by its image size."""
    pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not pixels and not (header_only and ds.get("Rows") and ds.get("Columns")):
        raise DicomError(f"a DICOM file without pixel data ({_sop_class(ds)}), not an image")
    for keyword in ("Rows", "Columns"):
        if not ds.get(keyword):
            raise DicomError(f"a DICOM image without {keyword}")


@_guarded
def header_mode(source: str | Path | BinaryIO) -> str:
    """The image mode from the header: "L" for grey images, "RGB" for colour ones."""
    ds = read_header(source)
    _require_image(ds, header_only=True)
    return header_mode_of(ds)


@_guarded
def decode_bytes(source: str | Path | BinaryIO) -> tuple[int, int, str, int]:
    """(width, height, mode, bytes needed to decode one frame) from the header."""
    ds = read_header(source)
    _require_image(ds, header_only=True)
    mode = header_mode_of(ds)
    try:
        width, height = int(ds.Columns), int(ds.Rows)
    except (TypeError, ValueError):
        raise DicomError(f"the image size {ds.Columns!r} x {ds.Rows!r} is not two numbers") from None
    need = width * height * (3 if mode == "RGB" else 1) * DICOM_BYTES_PER_SAMPLE + _DICOM_OVERHEAD
    # the whole file (its compressed pixel data) is held in memory while decoding
    if isinstance(source, (str, Path)):
        need += os.path.getsize(source)
    else:
        position = source.tell()
        need += source.seek(0, os.SEEK_END)
        source.seek(position)
    return width, height, f"DICOM {mode}", need


def header_mode_of(ds) -> str:
    photometric = str(ds.get("PhotometricInterpretation", ""))
    try:
        samples = int(ds.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError):
        raise DicomError(f"SamplesPerPixel {ds.get('SamplesPerPixel')!r} is not a number") from None
    return "RGB" if samples > 1 or photometric == "PALETTE COLOR" else "L"


def frame_index(frames: int, frame: FrameChoice) -> int:
    """The 0-based frame to read of a file with ``frames`` frames."""
    if frame == "first":
        return 0
    if frame == "middle":
        return frames // 2
    index = int(frame)
    if not 0 <= index < frames:
        raise DicomError(f"data.dicom.frame {index} is outside this file's {frames} frame(s) (0..{frames - 1})")
    return index


def _scale_to_8bit(values: np.ndarray, high: float) -> np.ndarray:
    return np.clip(np.rint(values * (255.0 / high)), 0, 255).astype(np.uint8)


def _window(values: np.ndarray, ds) -> np.ndarray:
    """Modality-transformed grey values -> 0..255 by the file's VOI LUT, window, or a percentile window."""
    from pydicom import Dataset
    from pydicom.pixels import apply_voi, apply_windowing

    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        return _scale_to_8bit(apply_voi(values, ds, index=0).astype(np.float64), 2**bits - 1)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        # pydicom's windowing maps to the range BitsStored (and the rescale) allow; a stand-in header with 8 unsigned
        # bits and no rescale makes it map to 0..255 with the file's own centre, width and VOI function.
        stand_in = Dataset()
        stand_in.PhotometricInterpretation = "MONOCHROME2"
        stand_in.BitsStored, stand_in.PixelRepresentation = 8, 0
        stand_in.WindowCenter, stand_in.WindowWidth = ds.WindowCenter, ds.WindowWidth
        if "VOILUTFunction" in ds:
            stand_in.VOILUTFunction = ds.VOILUTFunction
        try:
            windowed = apply_windowing(values, stand_in, index=0)
        except (ValueError, TypeError, IndexError):
            windowed = None  # a window width of 0 or an unknown function: fall back to the robust window
        if windowed is not None:
            return np.clip(np.rint(windowed), 0, 255).astype(np.uint8)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise DicomError("no finite pixel value in the frame")
    low, high = np.percentile(finite, _PERCENTILES)
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return _scale_to_8bit(np.clip(values, low, high) - low, high - low)


def _colour(values: np.ndarray, ds) -> np.ndarray:
    """RGB of any bit depth (palette colour through its LUT) -> 8 bits per channel."""
    from pydicom.pixels import apply_color_lut

    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        values = apply_color_lut(values, ds)
        bits = 16 if values.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored", 8))
    if bits <= 8:
        return np.clip(values, 0, 255).astype(np.uint8)
    return _scale_to_8bit(values.astype(np.float64), 2**bits - 1)


def to_display(ds, values: np.ndarray) -> np.ndarray:
    """One decoded frame of ``ds`` as uint8 (H, W) grey or (H, W, 3) RGB, by the policy of this module."""
    from pydicom.pixels import apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if values.ndim == 3 or photometric == "PALETTE COLOR":
        return _colour(values, ds)
    grey = np.asarray(apply_modality_lut(values, ds), dtype=np.float64)
    out = _window(grey, ds)
    if photometric == "MONOCHROME1":
        np.subtract(255, out, out=out)
    return out


def read_frame(source: str | Path | BinaryIO, frame: FrameChoice = "middle"):
    """(dataset, stored values of the chosen frame). Decoding errors of the plugins become :class:`DicomError`."""
    from pydicom.pixels import pixel_array

    ds = _read(source, force=True)
    _require_image(ds)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise DicomError(f"NumberOfFrames {ds.get('NumberOfFrames')!r} is not a number") from None
    index = frame_index(frames, frame)
    try:
        values = pixel_array(ds, index=index) if frames > 1 else ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - each decoding plugin raises its own types; all mean "undecodable"
        raise DicomError(f"the pixel data cannot be decoded ({_plugin_reasons(exc)})") from None
    if values.ndim == 3 and values.shape[-1] not in (3, 4):
        values = values[0]  # a decoder that returned every frame
    return ds, values


@_guarded
def load_dicom(source: str | Path | BinaryIO, frame: FrameChoice = "middle") -> np.ndarray:
    """The display image of one frame: uint8 (H, W) or (H, W, 3)."""
    ds, values = read_frame(source, frame)
    return to_display(ds, values)


def header_values(path: Path, keywords: list[str]) -> dict[str, str | None]:
    """The values of ``keywords`` in one file's header (None when absent or empty, or the file is not DICOM)."""
    try:
        return _header_values(path, keywords)
    except DicomError:
        return dict.fromkeys(keywords)


@_guarded
def _header_values(path: Path, keywords: list[str]) -> dict[str, str | None]:
    ds = _read(path, specific_tags=list(keywords), **_HEADER_ONLY)
    found: dict[str, str | None] = {}
    for keyword in keywords:
        value = ds.get(keyword)
        text = "" if value is None else str(value).strip()
        found[keyword] = text or None
    return found


def age_in_years(text: str) -> float | None:
    """A DICOM age string (045Y, 018M, 003W, 010D) or a plain number, in years."""
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([DWMY]?)\s*", text or "")
    if not match:
        return None
    number = float(match.group(1))
    return number / {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0, "": 1.0}[match.group(2)]
