"""DICOM decoding on the real test files inside the pydicom wheel: every transfer syntax (JPEG, JPEG-LS, JPEG 2000,
RLE, big-endian, implicit VR), colour spaces, palettes and multi-frame files decode to what pydicom's own pixel
handling gives after the documented windowing; files that are not images are refused with their reason."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from medclass.data.dicom import DicomError, header_values, load_dicom, looks_like_dicom
from medclass.data.images import DecodeBudgetExceeded, header_mode, image_dimensions, load_image

pytestmark = pytest.mark.unit

MR_VARIANTS = ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
               "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm"]  # fmt: skip
NOT_IMAGES = {"rtplan.dcm": "RT Plan Storage", "test-SR.dcm": "Comprehensive SR Storage",
              "waveform_ecg.dcm": "12-lead ECG Waveform Storage",
              "rtstruct.dcm": "RT Structure Set Storage"}  # fmt: skip


def _file(name: str) -> Path:
    return Path(get_testdata_file(name))


def _pydicom_display(name: str) -> np.ndarray:
    """pydicom's modality LUT and VOI (window) applied, mapped from the output range pydicom's windowing uses
    (that of BitsStored, signed or not) to 0..255."""
    ds = pydicom.dcmread(_file(name))
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    bits = ds.BitsStored
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    return np.rint((values - low) / (high - low) * 255).astype(np.int16)


def test_windowed_mr_equals_pydicoms_window() -> None:
    """MR_small has a window centre/width: it is applied, as pydicom applies it."""
    ours = load_dicom(_file("MR_small.dcm")).astype(np.int16)
    assert ours.shape == (64, 64)
    assert np.abs(ours - _pydicom_display("MR_small.dcm")).max() <= 1
    assert ours.min() < 60 and ours.max() == 255  # the window clips the brightest tissue


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_every_transfer_syntax_of_mr_small_decodes_the_same(name: str) -> None:
    """RLE, JPEG 2000 lossless, JPEG-LS lossless, big-endian, implicit VR: the same image."""
    assert np.array_equal(load_dicom(_file(name)), load_dicom(_file("MR_small.dcm")))


def test_ct_without_window_gets_a_percentile_window_after_the_rescale() -> None:
    """CT_small has a rescale (to Hounsfield units) and no window: the 0.5-99.5 percentile window of the HU values."""
    ds = pydicom.dcmread(_file("CT_small.dcm"))
    hounsfield = apply_modality_lut(ds.pixel_array, ds)
    assert float(ds.RescaleIntercept) != 0
    low, high = np.percentile(hounsfield, (0.5, 99.5))
    expected = np.rint((np.clip(hounsfield, low, high) - low) / (high - low) * 255)
    ours = load_dicom(_file("CT_small.dcm"))
    assert np.abs(ours.astype(np.int16) - expected).max() <= 1
    assert ours.min() == 0 and ours.max() == 255


def test_monochrome1_comes_out_the_right_way_round(tmp_path: Path) -> None:
    """The MR image stored inverted as MONOCHROME1 (values mirrored, window mirrored) looks like the original."""
    ds = pydicom.dcmread(_file("MR_small.dcm"))
    stored = ds.pixel_array.astype(np.int32)
    top = int(stored.max()) + int(stored.min())
    ds.PixelData = (top - stored).astype(np.int16).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter = top - float(ds.WindowCenter) + 1  # LINEAR windows are centred between values: mirror exactly
    ds.save_as(tmp_path / "mono1.dcm")
    original = load_dicom(_file("MR_small.dcm")).astype(np.int16)
    inverted = load_dicom(tmp_path / "mono1.dcm").astype(np.int16)
    assert np.abs(inverted - original).max() <= 1
    ds.PhotometricInterpretation = "MONOCHROME2"  # the same stored values read as MONOCHROME2: a negative
    ds.save_as(tmp_path / "negative.dcm")
    assert np.corrcoef(load_dicom(tmp_path / "negative.dcm").ravel(), original.ravel())[0, 1] < -0.9


@pytest.mark.parametrize(
    "name",
    ["SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm", "ExplVR_BigEnd.dcm", "examples_rgb_color.dcm",
     "SC_rgb_small_odd_big_endian.dcm"],
)  # fmt: skip
def test_lossless_colour_equals_pydicoms_pixels(name: str) -> None:
    ours = load_dicom(_file(name))
    assert ours.ndim == 3 and ours.shape[-1] == 3
    assert np.array_equal(ours, pydicom.dcmread(_file(name)).pixel_array)


@pytest.mark.parametrize(
    "name",
    ["SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_rgb_jpeg_dcmtk.dcm",
     "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jls_lossy_line.dcm"],
)  # fmt: skip
def test_ybr_and_lossy_colour_come_out_as_rgb(name: str) -> None:
    """YBR (JPEG baseline, 4:2:2, uncompressed) is converted to RGB: close to the lossless RGB of the same picture."""
    reference = load_dicom(_file("SC_rgb_rle.dcm")).astype(np.int16)
    assert np.abs(load_dicom(_file(name)).astype(np.int16) - reference).mean() < 3


def test_16_and_32_bit_colour_are_scaled_to_8_bits() -> None:
    eight = load_dicom(_file("SC_rgb_rle.dcm")).astype(np.int16)
    for name in ("SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm"):
        assert np.abs(load_dicom(_file(name)).astype(np.int16) - eight).max() <= 1


def test_palette_colour_goes_through_its_lut() -> None:
    ds = pydicom.dcmread(_file("examples_palette.dcm"))
    expected = np.rint(apply_color_lut(ds.pixel_array, ds) / 65535 * 255)
    ours = load_dicom(_file("examples_palette.dcm"))
    assert ours.shape == (*ds.pixel_array.shape, 3)
    assert np.abs(ours - expected).max() <= 1


def test_multi_frame_reads_the_chosen_frame() -> None:
    frames = pydicom.dcmread(_file("SC_rgb_rle_2frame.dcm")).pixel_array
    assert np.array_equal(load_dicom(_file("SC_rgb_rle_2frame.dcm"), "first"), frames[0])
    assert np.array_equal(load_dicom(_file("SC_rgb_rle_2frame.dcm"), "middle"), frames[1])
    assert np.array_equal(load_dicom(_file("SC_rgb_rle_2frame.dcm"), 0), frames[0])
    with pytest.raises(DicomError, match="frame 5 is outside this file's 2 frame"):
        load_dicom(_file("SC_rgb_rle_2frame.dcm"), 5)
    assert load_dicom(_file("examples_ybr_color.dcm"), "middle").shape[-1] == 3  # 30 JPEG frames, YBR


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_non_image_objects_are_refused_with_their_class(name: str) -> None:
    with pytest.raises(DicomError, match=f"without pixel data \\({NOT_IMAGES[name]}\\)"):
        load_image(_file(name), 32)


def test_damaged_and_undecodable_files_say_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DicomError, match="cannot be decoded.*less than expected"):
        load_image(_file("MR_truncated.dcm"), 32)
    with pytest.raises(DicomError, match="pip install pylibjpeg-libjpeg"):  # 12-bit JPEG: a GPL decoder, not ours
        load_image(_file("JPGExtended.dcm"), 32)
    with pytest.raises(DicomError, match="without pixel data \\(an object of unknown class\\)"):
        load_image(io.BytesIO(b"\0" * 128 + b"DICM" + b"\xff" * 40), 32)  # the marker, then garbage
    text = tmp_path / "notes.dcm"
    text.write_text("not an image, whatever its name says\n")
    with pytest.raises(DicomError):
        load_image(text, 32)
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]  # reported once, by medclass


def test_load_image_reads_dicom_by_name_and_by_content(tmp_path: Path) -> None:
    """A .dcm name, a file with no ending and an upload (bytes) are all recognised as DICOM."""
    bare = tmp_path / "IM0001"
    shutil.copy(_file("MR_small.dcm"), bare)
    data = io.BytesIO(_file("MR_small.dcm").read_bytes())
    assert looks_like_dicom(bare) and looks_like_dicom(data) and data.tell() == 0
    expected = load_image(_file("MR_small.dcm"), 32, channels=1)
    assert np.array_equal(load_image(bare, 32, channels=1), expected)
    assert np.array_equal(load_image(data, 32, channels=1), expected)
    assert load_image(io.BytesIO(data.getvalue()), 32).shape == (32, 32, 3)
    assert header_mode(_file("MR_small.dcm")) == "L" and header_mode(_file("SC_rgb_rle.dcm")) == "RGB"
    assert image_dimensions(_file("JPEG2000.dcm")) == (256, 1024)
    with pytest.raises(DecodeBudgetExceeded, match="256x1024 DICOM L image"):
        load_image(_file("JPEG2000.dcm"), 32, max_decode_bytes=1_000_000)


def test_header_values_reads_tags_only() -> None:
    values = header_values(_file("CT_small.dcm"), ["PatientID", "PatientSex", "Manufacturer", "BodyPartExamined"])
    assert values["Manufacturer"] == "GE MEDICAL SYSTEMS"
    assert values["PatientID"] and values["PatientSex"]
    assert values["BodyPartExamined"] is None  # absent
    assert header_values(Path(__file__), ["PatientID"]) == {"PatientID": None}  # not a DICOM file


def test_a_folder_of_dicom_files_skips_what_is_not_an_image_with_the_reason(tmp_path: Path) -> None:
    """Class folders of real DICOM files (every compression), with a structured report, an RT plan and a truncated
    file among them: the images load, and the three are skipped, each with its reason, never silently."""
    from medclass.config.data import FolderData
    from medclass.data import load_dataset
    from medclass.data.sources.files import build_index

    mr = ["MR_small.dcm", *MR_VARIANTS]
    ct = ["CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "JPEG2000.dcm", "JPEGLSNearLossless_16.dcm",
          "rtdose_1frame.dcm", "image_dfl.dcm"]  # fmt: skip
    for folder, names in (("mr", mr), ("ct", [*ct, "rtplan.dcm", "test-SR.dcm", "MR_truncated.dcm"])):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(_file(name), tmp_path / "data" / folder / name)
    shutil.copy(_file("CT_small.dcm"), tmp_path / "data" / "ct" / "IM0001")  # no ending: read by its content
    data = FolderData(root=tmp_path / "data", input_size=32, cache_dir=tmp_path / "cache")
    dataset = load_dataset(data)
    assert sum(len(s) for s in dataset.splits.values()) == len(mr) + len(ct) + 1
    reasons = {Path(entry["file"]).name: entry["reason"] for entry in dataset.skipped}
    assert set(reasons) == {"rtplan.dcm", "test-SR.dcm", "MR_truncated.dcm"}
    assert "without pixel data (RT Plan Storage)" in reasons["rtplan.dcm"]
    assert "cannot be decoded" in reasons["MR_truncated.dcm"]
    assert dataset.channels == 1  # every image is grey, by the DICOM headers
    assert "IM0001" in {Path(r.path).name for r in build_index(data).records}


def test_csv_groups_from_the_dicom_header(tmp_path: Path) -> None:
    """group_column names a DICOM keyword the CSV does not have: each file's PatientID is its group."""
    from medclass.config.data import CsvData
    from medclass.data.files import index_csv

    names = ["MR_small.dcm", "MR_small_RLE.dcm", "CT_small.dcm", "JPEG2000.dcm"]
    for name in names:
        shutil.copy(_file(name), tmp_path / name)
    (tmp_path / "labels.csv").write_text("image_id,label\n" + "".join(f"{n},{n[:2]}\n" for n in names))
    config = CsvData(csv=tmp_path / "labels.csv", group_column="PatientID")
    index = index_csv(config, tmp_path / "labels.csv", tmp_path)
    groups = {r.path.name: r.group for r in index.records}
    expected = {n: str(pydicom.dcmread(_file(n), stop_before_pixels=True).PatientID) or None for n in names}
    assert groups == expected
    assert groups["MR_small.dcm"] == groups["MR_small_RLE.dcm"]
    with pytest.raises(Exception, match="no column 'PatientIdentifier'.*DICOM attribute keyword"):
        index_csv(CsvData(csv=tmp_path / "labels.csv", group_column="PatientIdentifier"), tmp_path / "labels.csv",
                  tmp_path)  # fmt: skip


def test_a_group_keyword_no_file_has_is_an_error(tmp_path: Path) -> None:
    """group_column: PatientID on a folder of PNGs (no DICOM headers) would silently group nothing: refused."""
    from PIL import Image

    from medclass.config.data import FolderData
    from medclass.data.files import index_folder
    from medclass.errors import DataError

    root = tmp_path / "pngs"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        Image.new("L", (8, 8)).save(root / label / "x.png")
    with pytest.raises(DataError, match="group_column PatientID: none of the .* files has this DICOM attribute"):
        index_folder(FolderData(root=root, group_column="PatientID"), root)
    with pytest.raises(ValueError, match="not a DICOM attribute keyword"):
        FolderData(root=root, group_column="patient")


@pytest.mark.parametrize(
    "name", ["MR_small.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm"]
)
def test_damaged_bytes_never_raise_anything_but_a_decode_error(name: str) -> None:
    """Truncated files, flipped bytes and overwritten runs (an attacker's upload): each is decoded or refused with
    an error the callers handle (skipped with its reason, HTTP 422), never another exception. pydicom raised
    NotImplementedError, struct.error and BytesLengthException for such files before they were caught."""
    from medclass.data.images import DECODE_ERRORS

    rng = np.random.default_rng(0)
    data = _file(name).read_bytes()
    refused = 0
    for trial in range(60):
        damaged = bytearray(data)
        if trial % 3 == 0:
            damaged = damaged[: rng.integers(132, len(damaged))]
        elif trial % 3 == 1:
            for position in rng.integers(132, len(damaged), size=rng.integers(1, 20)):
                damaged[position] = rng.integers(256)
        else:
            start = int(rng.integers(132, min(len(damaged), 1200)))
            damaged[start : start + 8] = rng.integers(0, 256, size=8, dtype=np.uint8).tobytes()
        for read in (lambda b: image_dimensions(io.BytesIO(b)), lambda b: load_image(io.BytesIO(b), 32)):
            try:
                read(bytes(damaged))
            except DECODE_ERRORS:
                refused += 1
    assert refused > 0
