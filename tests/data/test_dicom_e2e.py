"""DICOM end to end: chest X-rays from ../shared/data written as DICOM files (8-bit, MONOCHROME1, 12-bit with a
rescale, RLE-compressed; a PatientID per patient, a PatientName that must never leak), then trained on with the
patient as the group, evaluated with subgroup results from DICOM tags, predicted and served; against the same
pixels as PNG files, the results are the same."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dicom_files import SECRET_NAME_PREFIX, convert_chest_xrays, pseudonym  # noqa: E402

SUBGROUPS = ["PatientSex", {"column": "PatientAge", "name": "age band", "bins": [0, 40, 60]}, "Manufacturer"]


def _chest_images(data_dir: Path, per_class: int) -> list[Path]:
    """NORMAL images, and PNEUMONIA images of patients with several images (so that grouping matters)."""
    train = data_dir / "chest_xray" / "train"
    normal = sorted((train / "NORMAL").glob("*.jpeg"))[:per_class]
    pneumonia = sorted((train / "PNEUMONIA").glob("*.jpeg"))
    by_patient: dict[str, list[Path]] = {}
    for path in pneumonia:
        by_patient.setdefault(path.name.split("_")[0], []).append(path)
    chosen = [p for paths in by_patient.values() if len(paths) >= 2 for p in paths][:per_class]
    return normal + chosen


@pytest.fixture(scope="module")
def chest_dicom(data_dir: Path, module_tmp: Path) -> dict:
    dicom_root, png_root = module_tmp / "dicom", module_tmp / "png"
    rows = convert_chest_xrays(_chest_images(data_dir, 36), dicom_root, png_root)
    return {"dicom": dicom_root, "png": png_root, "rows": rows}


def _config(root: Path, out: Path, *overrides: str):
    from medclass.config import load_config

    return load_config(
        None,
        [f"output_dir={out}", "trainer.max_epochs=2", "trainer.progress_bar=false", "model.name=resnet18",
         "model.pretrained=false", "evaluation.bootstrap=200", "evaluation.worst_images=4", *overrides],
        experiment="dicom",
        data={"source": "folder", "root": str(root), "input_size": 48, "batch_size": 16,
              "group_column": "PatientID"},
        evaluation={"subgroups": SUBGROUPS},
    )  # fmt: skip


@pytest.fixture(scope="module")
def dicom_run(chest_dicom: dict, module_tmp: Path):
    from medclass import run_experiment

    return run_experiment(_config(chest_dicom["dicom"], module_tmp / "runs"))


def test_dicom_pixels_equal_the_png_pixels(chest_dicom: dict) -> None:
    """Every variant (MONOCHROME1 inverted, 12-bit rescaled, RLE) decodes to the pixels it was made from, and to
    the original JPEG's within JPEG decoding tolerance (medclass decodes JPEGs at a reduced DCT scale)."""
    from medclass.data.images import load_image

    variants = set()
    for row in chest_dicom["rows"]:
        dicom = load_image(chest_dicom["dicom"] / row["file"], 64, channels=1)
        png = load_image(chest_dicom["png"] / row["file"].replace(".dcm", ".png"), 64, channels=1)
        assert np.array_equal(dicom, png), row
        jpeg = load_image(row["source"], 64, channels=1)
        assert np.abs(dicom.astype(np.int16) - jpeg).mean() < 2, row
        variants.add(row["variant"])
    assert variants == {"mono2", "mono1", "rescaled12", "rle"}


def test_patients_never_cross_splits_and_only_hashes_are_written(chest_dicom: dict, dicom_run) -> None:
    run_dir = dicom_run.run_dir
    with open(run_dir / "splits.csv", newline="") as handle:
        split_rows = list(csv.DictReader(handle))
    patient_of = {row["file"]: row["patient"] for row in chest_dicom["rows"]}
    assert len(split_rows) == len(chest_dicom["rows"])
    split_of_group: dict[str, set[str]] = {}
    patients_of_group: dict[str, set[str]] = {}
    for row in split_rows:
        split_of_group.setdefault(row["group"], set()).add(row["split"])
        patients_of_group.setdefault(row["group"], set()).add(patient_of[row["file"]])
    assert all(len(splits) == 1 for splits in split_of_group.values())
    # one hash per patient, one patient per hash; several patients have more than one image
    assert all(len(p) == 1 for p in patients_of_group.values())
    assert len(split_of_group) == len(set(patient_of.values()))
    assert any(sum(1 for r in split_rows if r["group"] == g) > 1 for g in split_of_group)
    assert all(row["group"].startswith("g-") for row in split_rows)
    assert "grouped by PatientID" in json.loads((run_dir / "data.json").read_text())["source"]["split"]


def test_no_tag_value_in_any_output(chest_dicom: dict, dicom_run) -> None:
    """Names, ids and dates written into the files occur in no file of the run (reports, logs, CSVs, package)."""
    from medclass.inference.package import package_from_run

    package_from_run(dicom_run.run_dir)
    secrets = {SECRET_NAME_PREFIX.encode(), b"19450517", b"20240101"}
    secrets |= {pseudonym(row["patient"]).encode() for row in chest_dicom["rows"]}
    files = [p for p in dicom_run.run_dir.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaks = [(p.name, s) for p, data in ((p, p.read_bytes()) for p in files) for s in secrets if s in data]
    assert leaks == []


def test_subgroup_results_from_dicom_tags(dicom_run) -> None:
    metrics = json.loads((dicom_run.run_dir / "metrics.json").read_text())
    entries = {entry["name"]: entry for entry in metrics["subgroups"]}
    assert set(entries) == {"PatientSex", "age band", "Manufacturer"}
    n_test = metrics["n_samples"]
    for entry in entries.values():
        assert sum(group["n"] for group in entry["subgroups"]) == n_test  # nothing dropped
    assert {g["value"] for g in entries["PatientSex"]["subgroups"]} <= {"F", "M"}
    assert {g["value"] for g in entries["age band"]["subgroups"]} <= {"<0", "0-40", "40-60", ">=60"}
    assert {g["value"] for g in entries["Manufacturer"]["subgroups"]} <= {"ACME", "Globex"}
    report = (dicom_run.run_dir / "report" / "report.html").read_text()
    assert "Results by subgroup" in report and "largest gap" in report
    assert (dicom_run.run_dir / "report" / "subgroups.png").is_file()


def test_predict_and_serve_dicom_equal_png(chest_dicom: dict, dicom_run, tmp_path: Path) -> None:
    """The DICOM-trained model gives the same probabilities for a DICOM file and the PNG of its pixels, in
    predict and over HTTP."""
    import httpx
    from serving import start_server

    from medclass.inference.predictor import load_predictor, predict_files

    predictor = load_predictor(str(dicom_run.run_dir))
    dicoms = sorted(chest_dicom["dicom"].rglob("*.dcm"))[::9]
    pngs = [chest_dicom["png"] / p.relative_to(chest_dicom["dicom"]).with_suffix(".png") for p in dicoms]
    from_dicom = predict_files(predictor, [str(p) for p in dicoms])
    from_png = predict_files(predictor, [str(p) for p in pngs])
    assert not from_dicom.unreadable
    for a, b in zip(from_dicom.predictions, from_png.predictions, strict=True):
        assert a.predicted == b.predicted
        assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 1e-5
    server = start_server(dicom_run.run_dir, tmp_path / "server-tmp")
    try:
        with open(dicoms[0], "rb") as handle:
            response = httpx.post(f"{server.url}/predict", files={"file": ("x.dcm", handle)}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predicted"] == from_dicom.predictions[0].predicted[0]
        assert abs(body["probabilities"]["PNEUMONIA"] - from_dicom.predictions[0].probabilities["PNEUMONIA"]) < 1e-5
        assert body["image_png"]  # the page shows the windowed image, which a browser cannot draw from DICOM
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)
