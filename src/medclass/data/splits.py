"""Seeded train/val/test splits with scikit-learn: stratified by class, and grouped (a patient or lesion never
in two splits) when groups are known. Splits given by the data (folders, a CSV column) are kept as they are."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from medclass.config.data import SplitConfig
from medclass.errors import DataError


def take_fraction(
    indices: np.ndarray, fraction: float, strata: np.ndarray | None, groups: np.ndarray | None, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (rest, taken) with about ``fraction`` of them taken."""
    if groups is not None:
        group_ids = groups[indices]
        n_folds = max(2, round(1 / fraction))
        if strata is not None and len(set(group_ids)) >= n_folds:
            folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            try:
                with warnings.catch_warnings():  # rare classes get fewer folds than asked; that is fine here
                    warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
                    rest, taken = next(folds.split(indices, strata[indices], group_ids))
                return indices[rest], indices[taken]
            except ValueError:
                pass  # too few groups per class to stratify: fall back to a grouped shuffle
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        try:
            rest, taken = next(splitter.split(indices, groups=group_ids))
        except ValueError as exc:
            raise DataError(f"cannot take the {what} split: {exc}; add images or change data.split") from None
        return indices[rest], indices[taken]
    try:
        rest, taken = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=None if strata is None else strata[indices]
        )
    except ValueError as exc:
        raise DataError(
            f"cannot take a stratified {what} split of {fraction:.0%} from {len(indices)} images ({exc}); "
            "add images, remove rare classes or change data.split"
        ) from None
    return np.sort(rest), np.sort(taken)


def check_class_sizes(strata: np.ndarray, classes: list[str], needed: int, where: str) -> None:
    counts = Counter(strata.tolist())
    small = [(classes[c], counts.get(c, 0)) for c in range(len(classes)) if counts.get(c, 0) < needed]
    if small:
        listed = ", ".join(f"{name!r} has {n}" for name, n in small)
        raise DataError(
            f"{where}: {listed} image(s); a stratified split needs at least {needed} per class (one per split): "
            "add images, or merge or remove the class"
        )


def assign_splits(
    given: list[str | None],
    strata: np.ndarray | None,
    groups: np.ndarray | None,
    config: SplitConfig,
    classes: list[str],
    group_name: str = "group",
) -> tuple[np.ndarray, str]:
    """The split of every image and a sentence saying how it was made.

    ``given`` holds the split the data states (None where it states none); ``strata`` the class per image
    (None for multi-label, which is split unstratified); ``groups`` a patient/lesion id per image or None.
    """
    split = np.array([s or "" for s in given], dtype=object)
    how = []
    grouped = f", grouped by {group_name}" if groups is not None else ""
    unassigned = np.flatnonzero(split == "")
    if len(unassigned):
        if strata is not None:
            check_class_sizes(strata[unassigned], classes, 3, "splitting the images")
        rest, test = take_fraction(unassigned, config.test, strata, groups, config.seed, "test")
        train, val = take_fraction(rest, config.val / (config.train + config.val), strata, groups, config.seed, "val")
        split[train], split[val], split[test] = "train", "val", "test"
        how.append(
            f"{len(unassigned)} images split {config.train:g}/{config.val:g}/{config.test:g} with seed {config.seed}"
            f"{', stratified by class' if strata is not None else ''}{grouped}"
        )
    if not (split == "val").any():
        train = np.flatnonzero(split == "train")
        if strata is not None:
            check_class_sizes(strata[train], classes, 2, "carving a validation split out of train")
        fraction = config.val / (config.train + config.val)
        kept, val = take_fraction(train, fraction, strata, groups, config.seed, "val")
        split[val] = "val"
        how.append(f"val carved out of the given train split ({fraction:.0%}, seed {config.seed}{grouped})")
    if len(unassigned) < len(split):
        how.insert(0, "splits given by the data")
    for name in ("train", "val", "test"):
        if not (split == name).any():
            raise DataError(f"the {name} split is empty; add {name} images or let medclass split by seed")
    return split.astype(str), "; ".join(how)


def merge_groups(groups: list[str | None], hashes: list[str]) -> np.ndarray | None:
    """One group label per image such that images sharing a given group or identical bytes share a label
    (union-find); None when every image would be alone (nothing to keep together)."""
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, (group, digest) in enumerate(zip(groups, hashes, strict=True)):
        for key in (("group", group), ("bytes", digest)):
            if key[1] is None:
                continue
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i
    roots = [find(i) for i in range(len(hashes))]
    if len(set(roots)) == len(roots):
        return None
    return np.array([f"g{r}" for r in roots])


def groups_cross_splits(split: np.ndarray, groups: np.ndarray) -> list[str]:
    """Groups that occur in more than one split (leakage)."""
    seen: dict[str, set[str]] = {}
    for s, g in zip(split, groups, strict=True):
        seen.setdefault(g, set()).add(s)
    return sorted(g for g, splits in seen.items() if len(splits) > 1)
