"""`data inspect` on real data: the files it writes, duplicates and leakage, unreadable files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import folder_config
from PIL import Image

from medclass.config import load_config
from medclass.data.inspect import inspect_dataset


def test_inspect_unsplit_folder_writes_charts_and_report(tmp_path: Path, data_dir: Path) -> None:
    inspection = inspect_dataset(folder_config(data_dir / "brain_mri_4class").data, tmp_path / "out")
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"counts.png", "report.json", "report.md"} <= written
    assert {f"samples_{c}.png" for c in ("glioma", "meningioma", "notumor", "pituitary")} <= written
    with Image.open(tmp_path / "out" / "samples_glioma.png") as grid:
        assert grid.width > 600 and grid.height > 150
    assert sum(sum(c.values()) for c in inspection.counts.values()) == 400
    assert inspection.modes == {"L": 400} and "512x512" in inspection.sizes
    # this real set holds exact copies; the split keeps each group of copies together, so none leaks
    assert len(inspection.duplicates) > 0 and inspection.cross_split_duplicates == []
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (
        report["counts"]["train"]["glioma"] + report["counts"]["val"]["glioma"] + report["counts"]["test"]["glioma"]
        == 100
    )


def test_copies_across_given_splits_are_reported_as_leakage(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "ds"
    source = data_dir / "brain_mri_4class"
    for split, start in (("train", 0), ("test", 20)):
        for name in ("glioma", "pituitary"):
            (root / split / name).mkdir(parents=True)
            for path in sorted((source / name).iterdir())[start : start + 8]:
                shutil.copy(path, root / split / name / path.name)
    leaked = sorted((root / "train" / "glioma").iterdir())[0]
    shutil.copy(leaked, root / "test" / "glioma" / "copy_of_train_image.jpg")
    (root / "train" / "pituitary" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    inspection = inspect_dataset(folder_config(root).data, tmp_path / "out")
    assert len(inspection.cross_split_duplicates) == 1
    assert any("LEAKAGE" in w for w in inspection.warnings)
    assert [u["file"] for u in inspection.unreadable] == ["train/pituitary/broken.jpg"]
    assert "leakage" in (tmp_path / "out" / "report.md").read_text()


def test_symlink_loops_are_counted_as_unreadable_not_a_traceback(tmp_path: Path, data_dir: Path) -> None:
    """A file that links to itself, two links to each other and a link to the folder above: `data inspect` once
    ended in OSError ELOOP where training skipped the file."""
    root = tmp_path / "ds"
    for name in ("glioma", "pituitary"):
        (root / name).mkdir(parents=True)
        for path in sorted((data_dir / "brain_mri_4class" / name).iterdir())[:12]:
            shutil.copy(path, root / name / path.name)
    (root / "glioma" / "self.jpg").symlink_to("self.jpg")
    (root / "pituitary" / "ping.jpg").symlink_to("pong.jpg")
    (root / "pituitary" / "pong.jpg").symlink_to("ping.jpg")
    (root / "pituitary" / "up").symlink_to("..")
    inspection = inspect_dataset(folder_config(root).data, tmp_path / "out")
    unreadable = sorted(u["file"] for u in inspection.unreadable)
    assert unreadable == ["glioma/self.jpg", "pituitary/ping.jpg", "pituitary/pong.jpg"], unreadable
    assert all("symbolic links" in u["reason"] for u in inspection.unreadable)
    assert sum(sum(c.values()) for c in inspection.counts.values()) == 27  # 24 images + 3 counted, not decoded
    assert "glioma/self.jpg" in (tmp_path / "out" / "report.md").read_text()


def test_inspect_medmnist(tmp_path: Path) -> None:
    config = load_config(None, experiment="t", data={"flag": "breastmnist"})
    inspection = inspect_dataset(config.data, tmp_path)
    assert inspection.counts["test"] == {"malignant": 42, "normal, benign": 114}
    assert (tmp_path / "samples_malignant.png").is_file() and inspection.modes == {"L": 780}
