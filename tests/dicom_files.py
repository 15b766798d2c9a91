"""Real chest X-rays written as DICOM files with pydicom, in the ways archives store them: 8-bit MONOCHROME2, inverted
MONOCHROME1, 12-bit with a rescale slope and intercept, and RLE-compressed. Every variant is written so that the
standard display pipeline (modality LUT, the file's window, MONOCHROME1 inverted) gives back exactly the 8-bit
pixels it was made from, which is what the tests check medclass does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
VARIANTS = ("mono2", "mono1", "rescaled12", "rle")
SECRET_NAME_PREFIX = "Doe^Secret"  # the PatientName written into every file: it must never appear in a run


def patient_of(name: str) -> str:
    """The patient a chest_xray file belongs to, from its name: person1000_bacteria_2931 -> person1000,
    IM-0115-0001 -> IM-0115, NORMAL2-IM-0381-0001 -> NORMAL2-IM-0381."""
    stem = Path(name).stem
    return stem.split("_")[0] if stem.startswith("person") else stem.rsplit("-", 1)[0]


def pseudonym(patient: str) -> str:
    """A PatientID that does not occur in the file names (so a grep for it finds only leaks of the tag)."""
    return "PID" + hashlib.sha256(patient.encode()).hexdigest()[:10].upper()


def write_dicom(pixels: np.ndarray, path: Path, variant: str, patient: str, sex: str, age: int) -> Path:
    """Write uint8 (H, W) ``pixels`` as a DICOM CR image of ``variant``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    ds.PatientName = f"{SECRET_NAME_PREFIX}{pseudonym(patient)[3:8]}"
    ds.PatientID = pseudonym(patient)
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientBirthDate = "19450517"
    ds.StudyDate = "20240101"
    ds.Manufacturer = "ACME" if variant in ("mono2", "rle") else "Globex"
    # A window of centre 128, width 256 maps stored value v to v exactly (PS3.3 C.11.2.1.2.1, LINEAR).
    ds.WindowCenter, ds.WindowWidth = "128", "256"
    if variant == "mono1":
        ds.set_pixel_data((255 - pixels.astype(np.int16)).astype(np.uint8), "MONOCHROME1", 8)
    elif variant == "rescaled12":
        # 12 bits stored: v * 16 + 5, with slope 1/16 and intercept -5/16 giving back v (both exact in binary)
        ds.set_pixel_data(pixels.astype(np.uint16) * 16 + 5, "MONOCHROME2", 12)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "0.0625", "-0.3125", "US"
    else:
        ds.set_pixel_data(pixels, "MONOCHROME2", 8)
        if variant == "rle":
            ds.compress(RLELossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def convert_chest_xrays(
    images: list[Path], out: Path, reference: Path | None = None, max_side: int = 224
) -> list[dict[str, str]]:
    """Each JPEG as a DICOM file under ``out``/<class>/ (the variants in turn), reduced to at most ``max_side``
    pixels; with ``reference``, the same reduced pixels also as lossless PNG under ``reference``/<class>/.
    Returns one row per image: file, class, patient, variant, sex, age, source (the JPEG)."""
    rows = []
    for i, source in enumerate(images):
        label = source.parent.name
        with Image.open(source) as image:
            image = image.convert("L")
            image.thumbnail((max_side, max_side))
            pixels = np.asarray(image)
        patient = patient_of(source.name)
        digest = int(hashlib.sha256(patient.encode()).hexdigest(), 16)
        sex, age = ("F", "M")[digest % 2], 20 + digest % 60
        variant = VARIANTS[i % len(VARIANTS)]
        write_dicom(pixels, out / label / f"{source.stem}.dcm", variant, patient, sex, age)
        if reference is not None:
            (reference / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(reference / label / f"{source.stem}.png")
        rows.append({"file": f"{label}/{source.stem}.dcm", "class": label, "patient": patient, "variant": variant,
                     "sex": sex, "age": str(age), "source": str(source)})  # fmt: skip
    return rows
