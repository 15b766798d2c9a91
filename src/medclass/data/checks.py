"""Checks every training run makes on its data, not only ``medclass data inspect``: identical images that sit in
two splits (leakage: the held-out numbers would be too good) and identical images that carry different labels
(label conflicts: the data contradicts itself).

"Identical" means the same file bytes (MD5) for file sources and the same pixels for MedMNIST arrays. Nothing is
fuzzy here, so every reported pair is a real one; near-duplicates (re-encoded or resized copies) are not looked
for.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LISTED = 20  # groups named in data.json and messages; the counts are always complete


@dataclass
class IdenticalImages:
    """Groups of identical images: ``members`` are "split:name" strings, ``labels`` each member's label."""

    cross_split: list[list[str]] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)  # "split:name=label"
    groups: int = 0  # groups of identical images of any kind (same split and same label included)
    published: bool = False  # a published benchmark split, which medclass keeps as it is

    def summary(self) -> dict[str, Any]:
        return {
            "identical_groups": self.groups,
            "cross_split_groups": len(self.cross_split),
            "cross_split_images": sum(len(g) for g in self.cross_split),
            "label_conflict_groups": len(self.conflicts),
            "cross_split": self.cross_split[:LISTED],
            "label_conflicts": self.conflicts[:LISTED],
            "method": "identical file bytes (MD5) or identical pixels; near-duplicates are not looked for",
        }

    def warnings(self) -> list[str]:
        notes = []
        if self.cross_split:
            notes.append(
                f"LEAKAGE: {len(self.cross_split)} group(s) of identical images sit in more than one split "
                f"({_examples(self.cross_split)}); held-out numbers can be too good: "
                + ("the published split is kept as it is, for comparison with other results" if self.published
                   else "remove the copies")
            )  # fmt: skip
        if self.conflicts:  # file sources stop before this unless conflicts were allowed
            notes.append(
                f"LABEL CONFLICT: {len(self.conflicts)} group(s) of identical images carry different labels "
                f"({_examples(self.conflicts)})"
            )
        return notes


def _examples(groups: list[list[str]], limit: int = 3) -> str:
    shown = "; ".join(" = ".join(group) for group in groups[:limit])
    return shown + (f"; and {len(groups) - limit} more (data.json)" if len(groups) > limit else "")


def find_identical(
    keys: list[str], names: list[str], splits: list[str], labels: list[str], published: bool = False
) -> IdenticalImages:
    """Group images by ``keys`` (a content hash) and report the groups that cross splits or disagree on labels."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_key[key].append(i)
    result = IdenticalImages(published=published)
    for members in by_key.values():
        if len(members) < 2:
            continue
        result.groups += 1
        if len({splits[i] for i in members}) > 1:
            result.cross_split.append([f"{splits[i]}:{names[i]}" for i in members])
        if len({labels[i] for i in members}) > 1:
            result.conflicts.append([f"{splits[i]}:{names[i]}={labels[i]}" for i in members])
    return result


def pixel_hashes(images: np.ndarray) -> list[str]:
    """MD5 of each image's pixels (N, H, W, C)."""
    return [hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]  # noqa: S324


def label_names(labels: np.ndarray, classes: list[str]) -> list[str]:
    """Each label as text: the class name, or the present labels joined by | for multi-label rows."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return [classes[int(v)] for v in labels]
    return ["|".join(c for c, on in zip(classes, row, strict=True) if on) or "(none)" for row in labels]
