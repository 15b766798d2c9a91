"""External validation on real data: `medclass evaluate MODEL --external NAME=PATH` scores every labelled image of
a set from elsewhere, names and leaves out copies of training images, and shows the internal test split beside it
with the differences; a run directory, a package and an .onnx file give the same numbers."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from medclass.evaluation.external import Proportion, calibration_line, newcombe, proportion
from tests.cli_runner import assert_one_line_error, medclass


def _no_nan(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run(chest_run: Path, module_tmp: Path) -> Path:
    """A copy of the shared tiny chest X-ray run, so that adding a report and external results changes nothing
    the service tests read."""
    copy = module_tmp / "run"
    shutil.copytree(chest_run, copy)
    return copy


@pytest.fixture(scope="module")
def kermany(module_tmp: Path, data_dir: Path) -> tuple[Path, list[str]]:
    """Every chest_xray test image (pre-split layout: only test/) plus three training images copied in."""
    root = module_tmp / "kermany"
    for label in ("NORMAL", "PNEUMONIA"):
        (root / "test" / label).mkdir(parents=True)
        for path in sorted((data_dir / "chest_xray" / "test" / label).glob("*.jpeg")):
            (root / "test" / label / path.name).symlink_to(path)
    copied = []
    for label, k in (("NORMAL", 3), ("PNEUMONIA", 7), ("PNEUMONIA", 11)):
        source = sorted((data_dir / "chest_xray" / "train" / label).glob("*.jpeg"))[k]
        shutil.copy(source, root / "test" / label / f"copy_{source.name}")
        copied.append(f"test/{label}/copy_{source.name}")
    return root, copied


@pytest.fixture(scope="module")
def scored(run: Path, kermany: tuple[Path, list[str]]) -> dict:
    report = medclass("evaluate", str(run), "--bootstrap", "200")  # the run's own report, for the section
    assert report.returncode == 0, report.stdout + report.stderr
    result = medclass("evaluate", str(run), "--external", f"kermany={kermany[0]}", "--bootstrap", "200")
    assert result.returncode == 0, result.stdout + result.stderr
    return {"stdout": result.stdout, "metrics": _no_nan((run / "external" / "kermany" / "metrics.json").read_text())}


def test_every_image_is_scored_and_the_copies_of_training_images_are_named_and_left_out(
    scored: dict, run: Path, kermany: tuple[Path, list[str]]
) -> None:
    metrics = scored["metrics"]
    _, copied = kermany
    images = metrics["images"]
    assert images["found"] == images["readable"] == 627 and images["skipped"] == 0
    identical = [d for d in metrics["duplicates"]["of_training"] if d["kind"] == "identical"]
    near = [d for d in metrics["duplicates"]["of_training"] if d["kind"] == "near-duplicate"]
    assert sorted(d["image"] for d in identical) == sorted(copied)
    # At this tiny model's 32 px a 64-bit hash can join two different children's radiographs (measured: 64 bits
    # need 64 px and more for them): such a candidate is named, never silent, and a test image, not a copy.
    assert len(near) <= 2 and all("copy_" not in d["image"] for d in near)
    assert images["left_out"] == len(identical) + len(near) and images["scored"] == 627 - images["left_out"]
    for item in identical:
        (match,) = item["matches"]
        assert match.startswith("train:train/") and match.endswith(item["image"].split("copy_")[1])
        assert f"left out: {item['image']} = {match}" in scored["stdout"]
    assert metrics["duplicates"]["also_in_internal_test"] == 624 - len(near)  # the internal test images: kept
    # the published test split holds identical pairs of its own; said, not hidden
    assert len(metrics["duplicates"]["within_set"]) == 6
    with (run / "external" / "kermany" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    left_out = {r["source"] for r in rows if r["in_metrics"] == "no"}
    assert len(rows) == 627 and left_out == set(copied) | {d["image"] for d in near}
    assert all(r["copy_of"].split(":")[0] in ("train", "val") for r in rows if r["in_metrics"] == "no")
    assert metrics["n_samples"] == images["scored"]
    # the shipped chest X-ray config declares sides: the run trained without left-right flips, and says so
    augmentation = json.loads((run / "run.json").read_text())["augmentation"]
    assert augmentation["hflip"] is False and "data.laterality" in augmentation["why"][0]


def test_internal_and_external_side_by_side_with_differences(scored: dict, run: Path) -> None:
    metrics = scored["metrics"]
    rows = {row["key"]: row for row in metrics["side_by_side"]}
    internal = _no_nan((run / "metrics.json").read_text())
    # The external set is the internal test split here (but the copies and at most a near-duplicate candidate left
    # out): the package scores it as the run's evaluation did, so every pair is (nearly) equal and every difference
    # is about 0 with an interval around it.
    assert rows["acc"]["internal"] == pytest.approx(internal["metrics"]["acc"], abs=1e-6)
    assert rows["auc"]["external"] == pytest.approx(internal["metrics"]["auc"], abs=0.01)
    for row in rows.values():
        assert row["difference"] == pytest.approx(0, abs=0.01), row["key"]
        if row["difference_ci"] is None:  # this tiny model answers NORMAL for nearly every image
            assert "resamples gave" in row["undefined"]["difference"], row
            continue
        low, high = row["difference_ci"]
        assert low < 0 < high, row["key"]
    threshold = json.loads((run / "calibration.json").read_text())["threshold"]
    assert metrics["operating_point"]["threshold"] == threshold and metrics["operating_point"]["chosen_on"] == "val"
    assert f"sensitivity@{threshold:.4g}" in rows and f"npv@{threshold:.4g}" in rows
    assert rows["acc"]["method"].startswith("wilson") and rows["auc"]["method"].startswith("percentile bootstrap")
    calibration = metrics["calibration"]
    assert calibration["on"] == "P(positive class)" and 0 < calibration["ece"] < 0.5
    assert math.isfinite(calibration["intercept"]) and math.isfinite(calibration["slope"])
    # the same images but at most one: the same calibration line, nearly
    assert metrics["calibration_internal"]["slope"] == pytest.approx(calibration["slope"], rel=0.1)
    assert 0.5 < metrics["gate"]["accepted"] <= 1 and metrics["gate"]["validation_accepted"] > 0.8
    assert "internal test vs external kermany" in scored["stdout"]


def test_the_run_report_and_the_page_show_the_external_set(scored: dict, run: Path) -> None:
    page = (run / "external" / "kermany" / "report.html").read_text()
    report = (run / "report" / "report.html").read_text()
    for html in (page, report):
        assert "External validation: kermany" in html and "external &minus; internal" in html
        assert "of the 627 images are copies of the model" in html
    assert report.count("<!-- external:start -->") == 1
    # thumbnails of the copies: the three copied training images beside their originals, and the set's own copies
    assert (run / "external" / "kermany" / "copies.png").is_file()
    for html in (page, report):
        assert 'alt="copies of training images in the external set' in html and "data:image/png;base64," in html
    assert scored["metrics"]["duplicates"]["within_near"] is not None
    again = medclass("evaluate", str(run), "--bootstrap", "0")  # a new report keeps the section
    assert again.returncode == 0, again.stderr
    assert "External validation: kermany" in (run / "report" / "report.html").read_text()


def test_keep_duplicates_a_package_and_onnx_give_the_same_numbers(
    scored: dict, run: Path, kermany: tuple[Path, list[str]], module_tmp: Path
) -> None:
    exported = medclass("export", str(run), "--onnx")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    package = run / "model"
    results = {}
    for name, model in (("package", package), ("onnx", package / "model.onnx")):
        out = medclass("evaluate", str(model), "--external", f"k_{name}={kermany[0]}", "--bootstrap", "0",
                       "--keep-duplicates")  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        folder = (run if name == "package" else package) / "external" / f"k_{name}"  # beside the model
        results[name] = _no_nan((folder / "metrics.json").read_text())
    for name, metrics in results.items():
        assert metrics["images"]["scored"] == 627 and metrics["images"]["left_out"] == 0, name
        found = [d for d in metrics["duplicates"]["of_training"] if d["kind"] == "identical"]
        assert len(found) == 3  # found through the package's source run
        assert "give the run directory" in metrics["internal"]["note"]
    assert results["onnx"]["metrics"]["auc"] == pytest.approx(results["package"]["metrics"]["auc"], abs=1e-4)


def test_resized_and_re_encoded_copies_of_training_images_are_left_out(
    run: Path, module_tmp: Path, data_dir: Path
) -> None:
    from PIL import Image

    root = module_tmp / "near"
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
        for path in sorted((data_dir / "chest_xray" / "test" / label).glob("*.jpeg"))[:30]:
            (root / label / path.name).symlink_to(path)
    normal = sorted((data_dir / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[2]
    with Image.open(normal) as image:
        image.resize((112, 112)).save(root / "NORMAL" / f"small_{normal.name}", quality=70)
    pneumonia = sorted((data_dir / "chest_xray" / "train" / "PNEUMONIA").glob("*.jpeg"))[3]
    with Image.open(pneumonia) as image:
        image.save(root / "PNEUMONIA" / f"requal_{pneumonia.name}", quality=60)
    out = medclass("evaluate", str(run), "--external", f"near={root}", "--bootstrap", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = _no_nan((run / "external" / "near" / "metrics.json").read_text())
    assert metrics["images"]["scored"] == 60 and metrics["images"]["left_out"] == 2
    found = {d["image"]: d for d in metrics["duplicates"]["of_training"]}
    assert set(found) == {f"NORMAL/small_{normal.name}", f"PNEUMONIA/requal_{pneumonia.name}"}
    assert {d["kind"] for d in found.values()} == {"near-duplicate"}
    assert found[f"NORMAL/small_{normal.name}"]["matches"][0].endswith(f"train/NORMAL/{normal.name}")
    assert "≈ " in out.stdout and "(near-duplicate)" in out.stdout


def test_classes_are_matched_by_name(run: Path, module_tmp: Path, data_dir: Path) -> None:
    def folder(name: str, classes: dict[str, str], per_class: int = 20) -> Path:
        root = module_tmp / name
        for target, source in classes.items():
            (root / target).mkdir(parents=True)
            for path in sorted((data_dir / "chest_xray" / "test" / source).glob("*.jpeg"))[:per_class]:
                (root / target / path.name).symlink_to(path)
        return root

    lower = folder("lower", {"normal": "NORMAL", "pneumonia": "PNEUMONIA"})
    out = medclass("evaluate", str(run), "--external", f"lower={lower}", "--bootstrap", "0")
    assert out.returncode == 0, out.stderr
    assert "matched ignoring case" in _no_nan((run / "external" / "lower" / "metrics.json").read_text())["class_note"]
    foreign = folder("foreign", {"NORMAL": "NORMAL", "COVID": "PNEUMONIA"})
    refused = medclass("evaluate", str(run), "--external", f"foreign={foreign}")
    assert_one_line_error(refused, "its classes COVID, NORMAL", "the model's classes NORMAL, PNEUMONIA", "COVID")
    subset = folder("subset", {"PNEUMONIA": "PNEUMONIA"}, per_class=30)
    out = medclass("evaluate", str(run), "--external", f"subset={subset}", "--bootstrap", "100")
    assert out.returncode == 0, out.stderr
    metrics = _no_nan((run / "external" / "subset" / "metrics.json").read_text())
    assert "1 of the model's 2 classes" in metrics["class_note"] and "NORMAL" in metrics["class_note"]
    assert "auc" not in metrics["metrics"] and metrics["images"]["scored"] == 30
    missing = medclass("evaluate", str(run), "--external", f"x={module_tmp / 'nothere'}")
    assert_one_line_error(missing, "--external", "does not exist")


def test_a_config_yaml_scores_its_whole_dataset(breast_run, module_tmp: Path) -> None:
    """BreastMNIST's own npz as an 'external' set: train and val images are copies (left out); of the 156 test
    images the published split's known identical copy of a training image is left out, and so are the test images
    with a near-duplicate in train or val (BreastMNIST holds many: the same ultrasound images)."""
    config = module_tmp / "breast.yaml"
    config.write_text("experiment: b\ndata:\n  source: medmnist\n  flag: breastmnist\n")
    out = medclass("evaluate", str(breast_run.run_dir), "--external", f"breast={config}", "--bootstrap", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = _no_nan((breast_run.run_dir / "external" / "breast" / "metrics.json").read_text())
    assert metrics["images"]["readable"] == 780
    kinds = [d["kind"] for d in metrics["duplicates"]["of_training"]]
    assert kinds.count("identical") == 546 + 78 + 1 and 10 <= kinds.count("near-duplicate") <= 60
    assert metrics["images"]["scored"] == 780 - len(kinds) and metrics["images"]["left_out"] == len(kinds)


def test_newcombe_and_the_calibration_line() -> None:
    # Newcombe (1998), table II example (method 10): 56/70 vs 48/80, difference 0.2, interval 0.0524 to 0.3339
    first, second = proportion(48, 80, 0.95), proportion(56, 70, 0.95)
    low, high = newcombe(first, second)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert newcombe(Proportion(0, 0, None), second) is None
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    truth = rng.random(20000) < p
    fair = calibration_line(truth, p)
    assert fair["slope"] == pytest.approx(1, abs=0.06) and fair["intercept"] == pytest.approx(0, abs=0.05)
    logit = np.log(p / (1 - p))
    extreme = calibration_line(truth, 1 / (1 + np.exp(-2 * logit)))  # over-confident: slope about 1/2
    assert extreme["slope"] == pytest.approx(0.5, abs=0.05)
    assert calibration_line(np.ones(10), p[:10])["slope"] is None


def test_subgroups_on_an_external_label_csv(run: Path, module_tmp: Path, data_dir: Path) -> None:
    """A label CSV with a column beside the label (here which half of the set an image came from: the attribute is
    made up, the images and labels are real) gives results by subgroup on the external set."""
    root = module_tmp / "with_column"
    root.mkdir()
    lines = ["image_id,label,batch"]
    for label in ("NORMAL", "PNEUMONIA"):
        for k, path in enumerate(sorted((data_dir / "chest_xray" / "test" / label).glob("*.jpeg"))[:30]):
            (root / path.name).symlink_to(path)
            lines.append(f"{path.name},{label},{'first' if k < 15 else 'second'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    out = medclass("evaluate", str(run), "--external", f"batches={root / 'labels.csv'}", "--subgroup", "batch",
                   "--bootstrap", "100")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = _no_nan((run / "external" / "batches" / "metrics.json").read_text())
    (entry,) = metrics["subgroups"]
    assert entry["column"] == "batch" and {g["value"]: g["n"] for g in entry["subgroups"]} == {
        "first": 30,
        "second": 30,
    }
    assert "subgroups by batch" in out.stdout
    assert "Subgroups on the external set" in (run / "external" / "batches" / "report.html").read_text()


def test_a_model_whose_images_have_sides_is_never_mirrored_at_prediction(run: Path, xray: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    refused = medclass("predict", str(run), str(xray), "--tta", "--out", str(out))
    assert_one_line_error(refused, "--tta averages each image with its left-right mirror", "sides matter")
    assert not out.exists()  # refused before anything is written
    assert medclass("predict", str(run), str(xray), "--out", str(out)).returncode == 0 and out.is_file()
