"""Every PIL mode a medical image arrives in decodes to the right uint8 array; EXIF orientation is honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclass.data.cache import choose_channels
from medclass.data.images import load_image


@pytest.fixture(scope="module")
def mri(data_dir: Path) -> Image.Image:
    with Image.open(data_dir / "brain_mri_4class" / "glioma" / "Te-glTr_0000.jpg") as image:
        return image.convert("L").resize((64, 48))


@pytest.fixture(scope="module")
def xray_rgb(data_dir: Path) -> Image.Image:
    path = sorted((data_dir / "chest_xray" / "test" / "NORMAL").iterdir())[0]
    with Image.open(path) as image:
        return image.convert("RGB").resize((64, 64))


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("L", ".png"), ("RGB", ".png"), ("RGBA", ".png"), ("P", ".png"), ("LA", ".png"), ("1", ".png"),
     ("CMYK", ".jpg"), ("CMYK", ".tif"), ("I;16", ".png"), ("I", ".tif"), ("F", ".tif")],
)  # fmt: skip
def test_every_mode_decodes(tmp_path: Path, mri: Image.Image, mode: str, suffix: str) -> None:
    if mode == "I;16":
        source = Image.fromarray((np.asarray(mri, dtype=np.uint16) * 200 + 1000).astype(np.uint16))
    elif mode == "F":
        source = Image.fromarray(np.asarray(mri, dtype=np.float32) / 255.0 * 3.5 - 1.0)
    else:
        source = mri.convert(mode)
    assert source.mode == mode
    path = save(source, tmp_path / f"image{suffix}")
    for channels in (1, 3):
        array = load_image(path, 32, "squash", channels)
        assert array.shape == (32, 32, channels) and array.dtype == np.uint8
        assert array.max() > array.min(), "the content must survive the conversion"
    if mode in ("I;16", "I", "F"):
        # high bit depths are stretched from their own range: the darkest pixel becomes 0, the brightest 255
        full = load_image(path, 64, "squash", 1)
        assert full.min() == 0 and full.max() >= 250


def test_sixteen_bit_keeps_contrast_order(tmp_path: Path, mri: Image.Image) -> None:
    base = np.asarray(mri, dtype=np.uint16) * 16  # a 12-bit scan
    path = save(Image.fromarray(base), tmp_path / "scan.png")
    decoded = load_image(path, 48, "squash", 1)[..., 0].astype(int)
    reference = np.asarray(mri.resize((48, 48), Image.Resampling.BILINEAR), dtype=int)
    assert np.corrcoef(decoded.ravel(), reference.ravel())[0, 1] > 0.99


def test_exif_orientation_is_honoured(tmp_path: Path, xray_rgb: Image.Image) -> None:
    wide = xray_rgb.resize((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(wide, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = np.asarray(wide.rotate(-90, expand=True), dtype=float)  # 40 x 80 -> displayed 40 wide, 80 high
    decoded = load_image(path, 40, "pad", 3).astype(float)
    # pad keeps the aspect ratio: the displayed image is tall, so black bars are left and right
    assert decoded[:, :8].mean() < 2 and decoded[:, -8:].mean() < 2
    centre = decoded[:, 10:30]
    expected = np.asarray(Image.fromarray(upright.astype(np.uint8)).resize((20, 40)), dtype=float)
    assert np.abs(centre - expected).mean() < 20


@pytest.mark.parametrize("resize", ["squash", "crop", "pad"])
def test_resize_modes_give_squares(tmp_path: Path, xray_rgb: Image.Image, resize: str) -> None:
    path = save(xray_rgb.resize((90, 30)), tmp_path / "wide.png")
    assert load_image(path, 24, resize, 3).shape == (24, 24, 3)


def test_channels_auto(tmp_path: Path, mri: Image.Image, xray_rgb: Image.Image) -> None:
    grey = [save(mri, tmp_path / "a.png"), save(mri.convert("I;16"), tmp_path / "b.png")]
    assert choose_channels(grey) == 1
    assert choose_channels([*grey, save(xray_rgb, tmp_path / "c.png")]) == 3


def test_float_images_with_nan_or_inf_pixels_keep_their_content(tmp_path: Path, mri: Image.Image) -> None:
    """One NaN or inf pixel used to turn the whole float image black (and it was still predicted)."""
    clean = np.asarray(mri, dtype=np.float32) / 255.0
    reference = load_image(save(Image.fromarray(clean), tmp_path / "clean.tif"), 48, "squash", 1)
    for bad in (np.nan, np.inf, -np.inf):
        spoiled = clean.copy()
        spoiled[5, 7] = bad
        decoded = load_image(save(Image.fromarray(spoiled), tmp_path / "spoiled.tif"), 48, "squash", 1)
        assert decoded.std() > 20 and np.corrcoef(decoded.ravel(), reference.ravel())[0, 1] > 0.95, bad
    everything_nan = np.full_like(clean, np.nan)
    with pytest.raises(ValueError, match="no finite pixel value"):
        load_image(save(Image.fromarray(everything_nan), tmp_path / "nan.tif"), 48, "squash", 1)


def whole_array_stretch(path: Path) -> np.ndarray:
    """The plain full-image stretch (medclass's code before the strips): the reference for the numbers."""
    with Image.open(path) as image:
        array = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(array)
    low, high = float(array[finite].min()), float(array[finite].max())
    array = np.nan_to_num(array, nan=low, posinf=high, neginf=low)
    return np.clip(np.rint((array - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_images_stretched_in_strips_equal_the_whole_array_stretch(tmp_path: Path, mode: str) -> None:
    from medclass.data.images import to_8bit

    rng = np.random.default_rng(3)
    # 1200 rows x 700 columns: several strips of rows, the last one short
    values = {"I;16": rng.integers(90, 4000, (1200, 700)).astype(np.uint16),
              "I": rng.integers(-70000, 90000, (1200, 700)).astype(np.int32),
              "F": (rng.standard_normal((1200, 700)) * 300).astype(np.float32)}[mode]  # fmt: skip
    if mode == "F":
        values[3, 4], values[900, 1], values[1199, 699] = np.nan, np.inf, -np.inf
    path = save(Image.fromarray(values), tmp_path / ("deep.tif" if mode != "I;16" else "deep.png"))
    with Image.open(path) as image:
        assert image.mode == mode
        image.load()
        stretched = np.asarray(to_8bit(image))
    np.testing.assert_array_equal(stretched, whole_array_stretch(path))


def test_an_image_over_the_decode_budget_is_refused_from_its_header() -> None:
    """A 68 KB 16-bit 6000x6000 PNG (once 1.3 GB and 4.5 s in the service): refused before any pixel is decoded."""
    import io
    import time

    from medclass.data.images import DecodeBudgetExceeded

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((6000, 6000), np.uint16)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000
    started = time.perf_counter()
    with pytest.raises(DecodeBudgetExceeded, match=r"6000x6000 I;16 image needs about 22\d MiB, over the limit of 100"):
        load_image(io.BytesIO(buffer.getvalue()), 224, max_decode_bytes=100 * 2**20)
    assert time.perf_counter() - started < 0.2, "the header alone is read"
    assert load_image(io.BytesIO(buffer.getvalue()), 32, max_decode_bytes=256 * 2**20).shape == (32, 32, 3)


@pytest.mark.slow
def test_decoding_needs_no_more_memory_than_the_service_charges(tmp_path: Path) -> None:
    """Peak RSS of one decode, measured in a fresh interpreter (benchmarks/decode_memory.py), is within what
    decode_bytes() charges before decoding, for the modes medical images come in."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from decode_memory import make_images, measure

    from medclass.data.images import decode_bytes

    modes = ("RGB", "I;16", "F")  # each measured in its own interpreter (~8 s to import)
    paths = make_images(tmp_path, 2000, modes)
    for mode in modes:
        peak, _ = measure("medclass", paths[mode], tmp_path / "warm.png")
        with Image.open(paths[mode]) as image:
            charged = decode_bytes(image)
        assert peak <= charged, f"{mode}: measured {peak / 2**20:.0f} MiB, charged {charged / 2**20:.0f} MiB"
