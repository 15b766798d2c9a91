"""Checks every training run makes on its data, not only ``medclass data inspect``: identical images that sit in
two splits (leakage: the held-out numbers would be too good) and identical images that carry different labels
(label conflicts: the data contradicts itself).

"Identical" means the same file bytes (MD5) for file sources and the same pixels for MedMNIST arrays: every such
pair is a real one. "Near-duplicate" means a perceptual hash (pHash, from imagehash) of the decoded images within a
few bits: resized and re-encoded copies (benchmarks/results/near_duplicates.md: 94-100% caught, false alarms on
0-0.7% of the images of chest_xray and DermaMNIST); slightly cropped copies are mostly missed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import imagehash
import numpy as np
from PIL import Image

LISTED = 20  # groups named in data.json and messages; the counts are always complete
NEAR_METHOD = (
    "perceptual hash (pHash, imagehash) of the decoded image: 64 bits within 2 below 64 px, 256 bits within 24 from "
    "64 px; catches resized and re-encoded copies, mostly misses cropped ones"
)
NEAR_LIMIT = 50_000  # images: the pairwise search grows with the square; larger sets are not searched (said)


@dataclass
class IdenticalImages:
    """Groups of identical images: ``members`` are "split:name" strings, ``labels`` each member's label."""

    cross_split: list[list[str]] = field(default_factory=list)
    conflicts: list[list[str]] = field(default_factory=list)  # "split:name=label"
    groups: int = 0  # groups of identical images of any kind (same split and same label included)
    published: bool = False  # a published benchmark split, which medclass keeps as it is
    near_cross_split: list[list[str]] = field(default_factory=list)  # near-duplicates (not identical) across splits
    near_groups: int = 0  # groups of near-duplicates of any kind
    near_searched: bool = True  # False: too many images to search (NEAR_LIMIT)

    def summary(self) -> dict[str, Any]:
        return {
            "identical_groups": self.groups,
            "cross_split_groups": len(self.cross_split),
            "cross_split_images": sum(len(g) for g in self.cross_split),
            "label_conflict_groups": len(self.conflicts),
            "cross_split": self.cross_split[:LISTED],
            "label_conflicts": self.conflicts[:LISTED],
            "method": "identical file bytes (MD5) or identical pixels",
            "near_duplicate_groups": self.near_groups,
            "near_cross_split_groups": len(self.near_cross_split),
            "near_cross_split": self.near_cross_split[:LISTED],
            "near_method": NEAR_METHOD if self.near_searched else f"not searched: more than {NEAR_LIMIT:,} images",
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
        if self.near_cross_split:
            notes.append(
                f"NEAR-DUPLICATES: {len(self.near_cross_split)} group(s) of near-identical images (resized or "
                f"re-encoded copies) sit in more than one split ({_examples(self.near_cross_split)}); held-out "
                "numbers can be too good"
                + (": the published split is kept as it is" if self.published else ": check and remove the copies")
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


def perceptual_hashes(images: Iterable[np.ndarray], side: int) -> np.ndarray:
    """pHash bits (N, 64 or 256) of uint8 (H, W, C) images decoded at ``side`` px: 256 bits from 64 px on, where
    64 bits cannot tell chest radiographs apart (pairs of different children within 2 bits were seen)."""
    size = 16 if side >= 64 else 8
    bits = []
    for image in images:
        picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        bits.append(imagehash.phash(picture, hash_size=size).hash.reshape(-1))
    return np.array(bits, dtype=bool).reshape(-1, size * size)


def near_threshold(bits: int) -> int:
    """Hamming distance up to which two hashes count as near-duplicates (chosen in benchmarks/near_duplicates.py)."""
    return 2 if bits <= 64 else 24


def near_pairs(hashes: np.ndarray, other: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(i, j) with Hamming distance within :func:`near_threshold`: within ``hashes`` (i < j), or from ``hashes``
    (i) to ``other`` (j). The bits are packed into 64-bit words and counted with numpy's popcount, a block of rows
    against all others at a time (twice as fast as a matrix product of 0/1 floats: 3 s for 17,000 images)."""
    if len(hashes) == 0 or (other is not None and len(other) == 0):
        return []
    threshold = near_threshold(hashes.shape[1])
    a = np.packbits(hashes, axis=1).view(np.uint64)
    b = a if other is None else np.packbits(other, axis=1).view(np.uint64)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(a), 512):
        block = a[start : start + 512]
        distance = np.zeros((len(block), len(b)), dtype=np.uint16)
        for word in range(a.shape[1]):
            distance += np.bitwise_count(block[:, None, word] ^ b[None, :, word])
        rows, cols = np.nonzero(distance <= threshold)
        for i, j in zip((rows + start).tolist(), cols.tolist(), strict=True):
            if other is not None or i < j:
                pairs.append((i, j))
    return pairs


def components(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected groups (two or more members) of ``n`` items joined by ``pairs`` (union-find)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    grouped: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        grouped[root(i)].append(i)
    return [members for members in grouped.values() if len(members) > 1]


def find_near(
    pairs: list[tuple[int, int]], keys: list[str], names: list[str], splits: list[str]
) -> tuple[list[list[int]], list[list[str]]]:
    """Near-duplicate groups joined by ``pairs`` (:func:`near_pairs`) that are not merely identical copies
    (members with at least two distinct ``keys``), and those among them that cross splits, as "split:name"."""
    groups = [g for g in components(len(keys), pairs) if len({keys[i] for i in g}) > 1]
    crossing = [[f"{splits[i]}:{names[i]}" for i in g] for g in groups if len({splits[i] for i in g}) > 1]
    return groups, crossing


def with_near_keys(keys: list[str], groups: list[list[int]]) -> list[str]:
    """``keys`` with the keys of every near-duplicate group joined into one (identical copies, which share a key,
    join with them), so that grouping by key keeps each group together."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    for group in groups:
        first = root(keys[group[0]])
        for i in group[1:]:
            other = root(keys[i])
            if other != first:
                parent[other] = first
    return [root(k) for k in keys]
