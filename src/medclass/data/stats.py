"""Per-channel mean/std of a dataset's training split at the training size: the ``dataset`` normalisation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from medclass.data.dataset import LabelledImages
from medclass.io import atomic_write_json, read_json


def stats_key(dataset: LabelledImages) -> str:
    """Identifies the training images: the source description and the training rows."""
    train = dataset.splits["train"]
    digest = hashlib.sha256(json.dumps(dataset.source, sort_keys=True, default=str).encode())
    digest.update(str(train.images.shape if train.rows is None else len(train.rows)).encode())
    if train.rows is not None:
        digest.update(np.asarray(train.rows).tobytes())
    return digest.hexdigest()[:24]


def compute_channel_stats(dataset: LabelledImages, chunk: int = 1024) -> dict[str, list[float]]:
    """Mean and standard deviation per channel in [0, 1] units, over every pixel of the training split only
    (never val/test, so nothing about held-out images leaks into preprocessing)."""
    train = dataset.splits["train"]
    channels = dataset.channels
    total = np.zeros(channels, dtype=np.float64)
    total_sq = np.zeros(channels, dtype=np.float64)
    count = 0
    for start in range(0, len(train), chunk):
        rows = np.arange(start, min(start + chunk, len(train)))
        block = (train.images[rows] if train.rows is None else train.images[train.rows[rows]]).astype(np.float64) / 255
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block**2).sum(axis=(0, 1, 2))
        count += block.shape[0] * block.shape[1] * block.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return {"mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std], "pixels": count}


def dataset_stats(dataset: LabelledImages, cache_dir: Path) -> dict:
    """The stored statistics of this dataset's training split, computed and stored when missing."""
    path = cache_dir / f"stats-{stats_key(dataset)}.json"
    if path.is_file():
        return {**read_json(path), "path": str(path), "stored": True}
    stats = {"dataset": dataset.name, "split": "train", "n_images": len(dataset.splits["train"]),
             **compute_channel_stats(dataset)}  # fmt: skip
    atomic_write_json(path, stats)
    return {**stats, "path": str(path), "stored": False}
