"""k-fold cross-validation splits, made from any source's dataset: train and val pooled, cut into k folds with
scikit-learn (stratified by class, groups kept whole), one fold held out as the run's ``test`` split, and a
validation share carved out of the other folds to choose the best epoch. The dataset's test split is dropped, so
nothing a fold run does can read it."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from medclass.config.data import FoldConfig
from medclass.data.checks import IdenticalImages
from medclass.data.dataset import ImageSplit, LabelledImages
from medclass.data.splits import take_fraction
from medclass.errors import DataError
from medclass.tasks import is_single_label


def pool_splits(first: ImageSplit, second: ImageSplit) -> ImageSplit:
    """Two splits as one (``first``'s images, then ``second``'s), sharing the image store when they do."""
    if first.images is second.images:
        images = first.images
        rows = np.concatenate([_rows(first), _rows(second)])
    else:
        images = np.concatenate([first.array(), second.array()])
        rows = None
    files = None if first.files is None or second.files is None else [*first.files, *second.files]
    groups = None
    if first.groups is not None or second.groups is not None:
        groups = np.concatenate([_groups(first, "a"), _groups(second, "b")])
    labels = np.concatenate([first.labels, second.labels])
    return ImageSplit(images=images, labels=labels, rows=rows, files=files, groups=groups)


def _named(dataset: LabelledImages, name: str) -> ImageSplit:
    """The split with every image's origin named (MedMNIST: ``<file>.npz:train_images[17]``), so a fold's
    predictions still say which image they are."""
    part = dataset.splits[name]
    return part if part.files is not None else dataclasses.replace(part, files=dataset.sources(name))


def _rows(split: ImageSplit) -> np.ndarray:
    return np.arange(len(split.images)) if split.rows is None else np.asarray(split.rows)


def _groups(split: ImageSplit, prefix: str) -> np.ndarray:
    if split.groups is not None:
        return np.asarray(split.groups).astype(str)
    return np.array([f"<{prefix}{i}>" for i in range(len(split))])  # every image alone


def take(split: ImageSplit, indices: np.ndarray) -> ImageSplit:
    """The images ``indices`` (positions in ``split``) as a split of their own, sharing the store."""
    return ImageSplit(
        images=split.images,
        labels=split.labels[indices],
        rows=_rows(split)[indices],
        files=None if split.files is None else [split.files[i] for i in indices],
        groups=None if split.groups is None else split.groups[indices],
    )


def _pooled_conflicts(conflicts: list[list[str]]) -> list[list[str]]:
    """The label conflicts ("split:name=label" members) left among the train and val images (the test split's
    images are not in any fold)."""
    kept = []
    for group in conflicts:
        members = [m for m in group if m.split(":", 1)[0] in ("train", "val")]
        if len({m.rsplit("=", 1)[-1] for m in members}) > 1:
            kept.append(members)
    return kept


def assign_folds(strata: np.ndarray | None, groups: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every image: stratified when ``strata`` are given, groups whole when ``groups`` are."""
    n = len(strata) if strata is not None else len(groups)
    if groups is not None:
        splitter = (StratifiedGroupKFold if strata is not None else GroupKFold)(k, shuffle=True, random_state=seed)
    else:
        splitter = (StratifiedKFold if strata is not None else KFold)(k, shuffle=True, random_state=seed)
    fold = np.full(n, -1)
    with warnings.catch_warnings():  # a class with fewer groups than folds misses some folds: reported below
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for index, (_, held) in enumerate(splitter.split(np.zeros(n), strata, groups)):
            fold[held] = index
    return fold


def cross_validation_fold(dataset: LabelledImages, fold: FoldConfig) -> LabelledImages:
    """The dataset as fold ``fold.index`` of ``fold.k`` sees it: train/val from the other folds, test = the fold."""
    train, val = (_named(dataset, name) for name in ("train", "val"))
    pool = pool_splits(train, val)
    single = is_single_label(dataset.task)
    strata = np.asarray(pool.labels) if single else None
    groups = None if pool.groups is None else np.asarray(pool.groups).astype(str)
    where = f"a {fold.k}-fold cross-validation of {dataset.name} (train+val, {len(pool)} images)"
    if strata is not None:
        counts = Counter(strata.tolist())
        small = [(dataset.classes[c], counts.get(c, 0)) for c in range(len(dataset.classes))]
        small = [(name, n) for name, n in small if n < fold.k]
        if small:
            listed = ", ".join(f"{name!r} has {n}" for name, n in small)
            raise DataError(
                f"{where} needs at least {fold.k} images of every class; {listed}: use fewer folds (--folds), "
                "or merge or remove the class"
            )
    n_groups = len(pool) if groups is None else len(set(groups))
    if n_groups < fold.k:
        raise DataError(f"{where}: only {n_groups} groups for {fold.k} folds; use fewer folds")
    assigned = assign_folds(strata, groups, fold.k, fold.seed)
    held = np.flatnonzero(assigned == fold.index - 1)
    rest = np.flatnonzero(assigned != fold.index - 1)
    val_share = len(val) / len(pool)
    grouped = ", groups whole" if groups is not None else ""
    kept, chosen = take_fraction(rest, val_share, strata, groups, fold.seed, "val")
    splits = {"train": take(pool, kept), "val": take(pool, chosen), "test": take(pool, held)}
    for name, part in splits.items():
        if len(part) == 0:
            raise DataError(f"{where}: fold {fold.index} leaves the {name} split empty; use fewer folds")
    how = (
        f"cross-validation fold {fold.index} of {fold.k} (folds drawn with seed {fold.seed}) over the train and val "
        "splits"
        f"{', stratified by class' if single else ''}{grouped}: test = the held-out fold, val = {val_share:.0%} "
        "of the other folds (chooses the best epoch); the dataset's test split is not used"
    )
    source = {**dataset.source, "split": how, "fold": fold.model_dump()}
    identical = dataset.identical
    if identical is not None:  # groups keep identical images in one fold: only label conflicts remain to report
        identical = IdenticalImages(conflicts=_pooled_conflicts(identical.conflicts), groups=identical.groups)
    return dataclasses.replace(dataset, splits=splits, source=source, identical=identical)
