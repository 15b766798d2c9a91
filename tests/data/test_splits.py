"""Splits: deterministic, stratified, grouped, and clear about what cannot be split."""

from __future__ import annotations

import numpy as np
import pytest

from medclass.config import SplitConfig
from medclass.data.splits import assign_splits, groups_cross_splits, merge_groups
from medclass.errors import DataError

pytestmark = pytest.mark.unit  # needs neither ../shared/data nor training

CLASSES = ["a", "b", "c"]


def labels(counts=(500, 300, 100)) -> np.ndarray:
    return np.concatenate([np.full(n, i) for i, n in enumerate(counts)])


def test_same_seed_same_split_other_seed_other_split() -> None:
    y = labels()
    first, how = assign_splits([None] * len(y), y, None, SplitConfig(seed=3), CLASSES)
    again, _ = assign_splits([None] * len(y), y, None, SplitConfig(seed=3), CLASSES)
    other, _ = assign_splits([None] * len(y), y, None, SplitConfig(seed=4), CLASSES)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert "seed 3" in how and "stratified" in how


def test_fractions_and_stratification() -> None:
    y = labels()
    split, _ = assign_splits([None] * len(y), y, None, SplitConfig(train=0.7, val=0.15, test=0.15), CLASSES)
    assert abs((split == "test").mean() - 0.15) < 0.01 and abs((split == "val").mean() - 0.15) < 0.01
    for name in ("train", "val", "test"):
        share = np.bincount(y[split == name], minlength=3) / (split == name).sum()
        assert np.allclose(share, [500 / 900, 300 / 900, 100 / 900], atol=0.02), name


def test_groups_never_cross_splits() -> None:
    rng = np.random.default_rng(0)
    y = labels((400, 400, 200))
    groups = np.array([f"patient{rng.integers(0, 150)}" for _ in y])
    split, how = assign_splits([None] * len(y), y, groups, SplitConfig(), CLASSES, "patient_id")
    assert groups_cross_splits(split, groups) == []
    assert "grouped by patient_id" in how
    assert 0.05 < (split == "test").mean() < 0.16


def test_identical_files_and_groups_merge() -> None:
    merged = merge_groups([None, None, "p1", "p1", None], ["x", "x", "y", "z", "w"])
    assert merged is not None
    assert merged[0] == merged[1] and merged[2] == merged[3] and len(set(merged)) == 3
    assert merge_groups([None, None], ["x", "y"]) is None


def test_given_splits_are_kept_and_val_is_carved_from_train() -> None:
    y = labels((200, 200, 100))
    given = ["test" if i % 5 == 0 else "train" for i in range(len(y))]
    split, how = assign_splits(given, y, None, SplitConfig(), CLASSES)
    assert all(split[i] == "test" for i in range(0, len(y), 5))
    assert (split == "val").sum() > 0 and all(given[i] == "train" for i in np.flatnonzero(split == "val"))
    assert "carved" in how


def test_a_class_too_small_to_split_is_a_clear_error() -> None:
    y = labels((50, 50, 2))
    with pytest.raises(DataError, match=r"'c' has 2 image\(s\); a stratified split needs at least 3 per class"):
        assign_splits([None] * len(y), y, None, SplitConfig(), CLASSES)


def test_multilabel_is_split_without_strata() -> None:
    split, how = assign_splits([None] * 200, None, None, SplitConfig(), ["x", "y"])
    assert set(split) == {"train", "val", "test"} and "stratified" not in how
