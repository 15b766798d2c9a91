"""Training and evaluation on file sources: the split is recorded, evaluation sees the same split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medclass import evaluate_run, load_config, run_experiment
from medclass.data import load_dataset
from medclass.data.cache import cache_root
from medclass.data.stats import dataset_stats

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mri_run(module_tmp: Path):
    config = load_config(
        REPO / "configs" / "brain_mri.yaml",
        [f"output_dir={module_tmp}", "trainer.max_epochs=1", "data.input_size=32",
         "trainer.progress_bar=false", "data.normalization=dataset"],
    )  # fmt: skip
    return config, run_experiment(config)


def test_split_and_skipped_files_are_recorded(mri_run) -> None:
    _, result = mri_run
    with (result.run_dir / "splits.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 400 and {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(r["file"].split("/")[0] == r["label"] for r in rows)
    assert "MD5SUMS.txt" in (result.run_dir / "skipped.csv").read_text()
    data = json.loads((result.run_dir / "data.json").read_text())
    assert data["source"]["type"] == "folder" and "seed 0" in data["source"]["split"] and data["skipped"] == 1


def test_dataset_normalisation_is_used(mri_run) -> None:
    config, result = mri_run
    stats = dataset_stats(load_dataset(config.data), cache_root())
    preprocessing = json.loads((result.run_dir / "preprocessing.json").read_text())
    assert preprocessing["mean"] == pytest.approx(stats["mean"]) and preprocessing["input_size"] == 32


def test_evaluate_sees_the_same_test_split(mri_run) -> None:
    _, result = mri_run
    again = evaluate_run(result.run_dir)
    assert again.metrics == result.test.metrics and again.n_samples == result.test.n_samples
    with (result.run_dir / "predictions_test.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == result.test.n_samples


def test_csv_source_trains(tmp_path: Path) -> None:
    config = load_config(
        REPO / "configs" / "dermamnist_jpeg.yaml",
        [
            f"output_dir={tmp_path}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=5",
            "trainer.progress_bar=false",
            "gate.fit=false",  # a pass over 7,000 training images that this test does not read
        ],
    )
    result = run_experiment(config)
    assert result.test.n_samples == 2005 and 0.0 <= result.test.metrics["auc"] <= 1.0


def test_multilabel_csv_trains_with_validation_thresholds(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "dermamnist_jpeg28" / "images"
    rows = (data_dir / "dermamnist_jpeg28" / "labels.csv").read_text().splitlines()[1:1201]
    lines = []
    for row in rows:
        name, dx, _ = row.split(",")
        findings = [dx] + (["malignant"] if dx in ("mel", "bcc", "akiec") else [])
        lines.append(f"{name},{'|'.join(findings)}")
    (tmp_path / "labels.csv").write_text("image_id,findings\n" + "\n".join(lines) + "\n")
    config = load_config(
        None,
        [f"output_dir={tmp_path / 'runs'}", "trainer.max_epochs=1", "trainer.progress_bar=false"],
        experiment="multilabel",
        data={"source": "csv", "csv": str(tmp_path / "labels.csv"), "image_dir": str(images),
              "label_column": "findings", "label_separator": "|", "input_size": 28, "batch_size": 64},
    )  # fmt: skip
    result = run_experiment(config)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["task"] == "multilabel" and len(metrics["thresholds"]) == 8
    assert all(0.0 <= t <= 1.0 for t in metrics["thresholds"])
    with (result.run_dir / "predictions_test.csv").open() as handle:
        header = next(csv.reader(handle))
    assert "p:malignant" in header and "true:malignant" in header


def leaky_folder(root: Path, data_dir: Path) -> Path:
    """Pre-split class folders of real MRI images with 3 training images copied into test/ (leakage) and 2
    glioma images copied into train/notumor/ (identical files, different labels)."""
    import shutil

    source = data_dir / "brain_mri_4class"
    for split, start, count in (("train", 0, 24), ("test", 40, 8)):
        for name in ("glioma", "notumor"):
            (root / split / name).mkdir(parents=True)
            for path in sorted((source / name).iterdir())[start : start + count]:
                shutil.copy(path, root / split / name / path.name)
    gliomas = sorted((root / "train" / "glioma").iterdir())
    for path in gliomas[:3]:
        shutil.copy(path, root / "test" / "glioma" / f"copy_{path.name}")
    for path in gliomas[3:5]:
        shutil.copy(path, root / "train" / "notumor" / f"relabelled_{path.name}")
    return root


@pytest.mark.slow
def test_training_reports_leakage_and_stops_on_label_conflicts(tmp_path: Path, data_dir: Path) -> None:
    from cli_runner import assert_one_line_error, medclass

    root = leaky_folder(tmp_path / "leaky", data_dir)
    config = tmp_path / "leaky.yaml"
    config.write_text(
        f"experiment: leaky\ndata: {{source: folder, root: {root}, input_size: 32, batch_size: 16}}\n"
        "model: {name: resnet18}\ntrainer: {max_epochs: 1, progress_bar: false}\nevaluation: {bootstrap: 0}\n"
    )
    out = f"output_dir={tmp_path / 'runs'}"
    assert_one_line_error(medclass("train", "-c", str(config), out),
                          "2 group(s) of identical image files carry different labels", "relabelled_",
                          "data.allow_label_conflicts=true")  # fmt: skip
    result = medclass("train", "-c", str(config), out, "data.allow_label_conflicts=true")
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    # 3 copies made here, and one pair the shared set has itself (notumor Te-no_0012 = Te-no_0044)
    assert "LEAKAGE: 4 group(s) of identical images sit in more than one split" in " ".join(console.split())
    assert "LABEL CONFLICT: 2 group(s)" in " ".join(console.split())
    (run,) = (tmp_path / "runs" / "leaky").iterdir()
    checks = json.loads((run / "data.json").read_text())["checks"]
    assert checks["cross_split_groups"] == 4 and checks["label_conflict_groups"] == 2
    assert any("copy_" in member for group in checks["cross_split"] for member in group)
    html = (run / "report" / "report.html").read_text()
    assert "LEAKAGE: 4 group(s)" in html and "LABEL CONFLICT: 2 group(s)" in html
