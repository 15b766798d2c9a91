"""Cross-validation folds: groups whole, stratified, a partition of train+val, the test split never in a fold."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medclass.config import FoldConfig, load_config
from medclass.data import load_dataset
from medclass.errors import DataError


def derma_with_patients(data_dir: Path, tmp_path: Path, rows: int = 400, per_patient: int = 3) -> Path:
    """The real DermaMNIST JPEGs with a patient column: every ``per_patient`` consecutive images one patient."""
    source = data_dir / "dermamnist_jpeg28"
    with open(source / "labels.csv", newline="") as handle:
        records = list(csv.DictReader(handle))[:rows]
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "dx", "patient"])
        for i, record in enumerate(records):
            writer.writerow([record["image_id"], record["dx"], f"p{i // per_patient}"])
    return path


def csv_data(csv_path: Path, data_dir: Path, **extra):
    data = {
        "source": "csv",
        "csv": str(csv_path),
        "image_dir": str(data_dir / "dermamnist_jpeg28" / "images"),
        "label_column": "dx",
        "group_column": "patient",
        "image_suffix": ".jpg",
        "input_size": 28,
        **extra,
    }
    return load_config(None, [], experiment="t", data=data).data


def test_folds_keep_patients_whole_and_partition_train_val(data_dir: Path, tmp_path: Path) -> None:
    config = csv_data(derma_with_patients(data_dir, tmp_path), data_dir, classes=None)
    whole = load_dataset(config)
    pool = set(whole.sources("train")) | set(whole.sources("val"))
    held_out = set(whole.sources("test"))
    patient = {}
    with open(tmp_path / "labels.csv") as handle:
        for row in csv.DictReader(handle):
            patient[row["image_id"]] = row["patient"]
    seen: list[str] = []
    for index in (1, 2, 3):
        fold = load_dataset(config.model_copy(update={"fold": FoldConfig(k=3, index=index)}))
        parts = {name: fold.sources(name) for name in ("train", "val", "test")}
        everything = [s for names in parts.values() for s in names]
        assert set(everything) == pool and len(everything) == len(pool)  # train+val, each image once
        assert not set(everything) & held_out  # the dataset's test split is in no fold
        where = {}
        for name, names in parts.items():
            for source in names:
                where.setdefault(patient[Path(source).stem], set()).add(name)
        assert all(len(splits) == 1 for splits in where.values())  # a patient in one part only
        assert "fold" in fold.source and "not used" in fold.source["split"]
        seen += parts["test"]
    assert sorted(seen) == sorted(pool)  # the held-out folds partition train+val


def test_same_fold_every_time_and_other_seed_other_folds(data_dir: Path, tmp_path: Path) -> None:
    config = csv_data(derma_with_patients(data_dir, tmp_path, per_patient=1), data_dir)
    first = load_dataset(config.model_copy(update={"fold": FoldConfig(k=4, index=2, seed=1)}))
    again = load_dataset(config.model_copy(update={"fold": FoldConfig(k=4, index=2, seed=1)}))
    other = load_dataset(config.model_copy(update={"fold": FoldConfig(k=4, index=2, seed=2)}))
    assert first.sources("test") == again.sources("test") != other.sources("test")
    # stratified: the commonest class's share is about the same in the held-out fold and the training part
    share = [np.mean(first.splits[s].labels == np.bincount(first.splits["train"].labels).argmax()) for s in
             ("train", "test")]  # fmt: skip
    assert abs(share[0] - share[1]) < 0.05


def test_medmnist_folds_name_their_npz_images(medmnist_dir: Path) -> None:
    config = load_config(None, ["data.flag=breastmnist"], experiment="t").data
    fold = load_dataset(config.model_copy(update={"fold": FoldConfig(k=5, index=5)}))
    names = [s for split in ("train", "val", "test") for s in fold.sources(split)]
    assert len(names) == 546 + 78 and all("breastmnist.npz:" in s for s in names)
    assert not any(":test_images[" in s for s in names)
    assert len(fold.splits["test"]) in (124, 125)


def test_a_class_rarer_than_the_folds_is_refused(data_dir: Path, tmp_path: Path) -> None:
    config = csv_data(derma_with_patients(data_dir, tmp_path, per_patient=1), data_dir)
    whole = load_dataset(config)
    counts = np.bincount(np.concatenate([whole.splits["train"].labels, whole.splits["val"].labels]))
    rarest, k = whole.classes[int(counts.argmin())], int(counts.min()) + 1
    expected = rf"needs at least {k} images of every class; '{rarest}' has {k - 1}.*fewer folds"
    with pytest.raises(DataError, match=expected):
        load_dataset(config.model_copy(update={"fold": FoldConfig(k=k, index=1)}))
