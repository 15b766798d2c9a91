"""Near-duplicates on real images: resized and re-encoded copies are found by the perceptual hash, different
images are not joined, copies are kept in one split when medclass splits, and named as leakage when the data
gives the split."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from medclass.data.checks import near_pairs, perceptual_hashes
from medclass.data.images import load_image
from tests.conftest import folder_config


def _copy(path: Path, scale: float = 0.5, quality: int | None = 70) -> bytes:
    """A resized copy, JPEG re-encoded at ``quality`` (PNG when None)."""
    with Image.open(path) as image:
        small = image.convert("RGB").resize((int(image.width * scale), int(image.height * scale)))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=quality) if quality else small.save(buffer, "PNG")
    return buffer.getvalue()


def test_copies_are_found_and_different_images_are_not(data_dir: Path) -> None:
    for files, size, channels in (
        (sorted((data_dir / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:60], 64, 1),
        (sorted((data_dir / "dermamnist_jpeg28" / "images").glob("*train*.jpg"))[:60], 28, 3),
    ):
        originals = [load_image(f, size, "squash", channels) for f in files]
        # resized to half (the benchmark's 100% on chest_xray, 94% on DermaMNIST at these settings)
        copies = [load_image(io.BytesIO(_copy(f, quality=None)), size, "squash", channels) for f in files]
        bits = perceptual_hashes(originals, size)
        copied = perceptual_hashes(copies, size)
        assert bits.shape[1] == (256 if size >= 64 else 64)
        found = set(near_pairs(copied, bits))
        caught = sum((i, i) in found for i in range(len(files)))
        assert caught >= 0.85 * len(files), (files[0].parent, caught)
        assert len(near_pairs(bits)) <= 1, files[0].parent  # 60 different images: at most a chance pair


def _folder(root: Path, data_dir: Path) -> tuple[Path, str]:
    for label in ("glioma", "notumor"):
        (root / label).mkdir(parents=True)
        for path in sorted((data_dir / "brain_mri_4class" / label).glob("*.jpg"))[:40]:
            (root / label / path.name).symlink_to(path)
    original = sorted((data_dir / "brain_mri_4class" / "glioma").glob("*.jpg"))[5]
    (root / "glioma" / f"copy_{original.name}").write_bytes(_copy(original))
    return root, original.name


def test_a_split_made_by_medclass_keeps_copies_together(tmp_path: Path, data_dir: Path) -> None:
    from medclass.data import load_dataset

    root, name = _folder(tmp_path / "mri", data_dir)
    config = folder_config(root, f"data.cache_dir={tmp_path / 'cache'}")
    dataset = load_dataset(config.data)
    where = {f: s for s, split in dataset.splits.items() for f in split.files}
    assert where[f"glioma/{name}"] == where[f"glioma/copy_{name}"]
    assert "near-duplicate" in dataset.source["split"]
    checks = dataset.summary()["checks"]
    assert checks["near_duplicate_groups"] >= 1 and checks["near_cross_split_groups"] == 0


def test_a_given_split_with_a_copy_across_splits_is_named_as_leakage(tmp_path: Path, data_dir: Path) -> None:
    from medclass.data import load_dataset

    root = tmp_path / "given"
    for split, rows in (("train", slice(0, 30)), ("val", slice(30, 35)), ("test", slice(35, 45))):
        for label in ("glioma", "notumor"):
            (root / split / label).mkdir(parents=True)
            for path in sorted((data_dir / "brain_mri_4class" / label).glob("*.jpg"))[rows]:
                (root / split / label / path.name).symlink_to(path)
    original = sorted((data_dir / "brain_mri_4class" / "glioma").glob("*.jpg"))[3]
    (root / "test" / "glioma" / f"copy_{original.name}").write_bytes(_copy(original))
    dataset = load_dataset(folder_config(root, f"data.cache_dir={tmp_path / 'cache'}").data)
    (warning,) = [w for w in dataset.warnings if w.startswith("NEAR-DUPLICATES")]
    assert f"train:train/glioma/{original.name}" in warning and f"test:test/glioma/copy_{original.name}" in warning
    summary = json.loads(json.dumps(dataset.summary()))
    assert summary["checks"]["near_cross_split_groups"] == 1 and "pHash" in summary["checks"]["near_method"]
    assert np.isfinite(summary["checks"]["near_duplicate_groups"])
