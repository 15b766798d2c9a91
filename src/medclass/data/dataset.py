"""In-memory image datasets: decoded uint8 arrays plus labels, the common currency of every data source."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medclass.config.data import SPLITS as SPLITS  # where sources have always imported it from
from medclass.data.checks import IdenticalImages
from medclass.tasks import Task, is_single_label


@dataclass(frozen=True)
class ImageSplit:
    """One split.

    ``images`` is a uint8 (M, H, W, C) store, possibly a memory-mapped cache shared by all splits; ``rows`` says
    which of its rows belong to this split, in order (None: all rows). ``labels`` are int64 (N,) or, for
    multi-label, float32 (N, L), one per row of the split. ``files`` names each image's source file, when known.
    ``groups`` gives each image a group id that must not be split up (a patient, a lesion, identical copies),
    when the source knows one; cross-validation folds keep every group whole.
    """

    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray | None = None
    files: list[str] | None = None
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        n_images = len(self.images) if self.rows is None else len(self.rows)
        if n_images != len(self.labels):
            raise ValueError(f"{n_images} images but {len(self.labels)} labels")
        if self.files is not None and len(self.files) != len(self.labels):
            raise ValueError(f"{len(self.files)} file names but {len(self.labels)} labels")
        if self.groups is not None and len(self.groups) != len(self.labels):
            raise ValueError(f"{len(self.groups)} group ids but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """The index-th image of this split, (H, W, C) uint8."""
        return self.images[index if self.rows is None else self.rows[index]]

    def array(self) -> np.ndarray:
        """All images of this split as one in-memory array."""
        return np.asarray(self.images if self.rows is None else self.images[self.rows])


@dataclass(frozen=True)
class LabelledImages:
    """A dataset with its train/val/test splits, class names and task type, as a source produced it."""

    name: str
    task: Task
    classes: list[str]
    splits: dict[str, ImageSplit]
    source: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)  # images left out: {"file", "reason"}
    identical: IdenticalImages | None = None  # identical images across splits / with different labels
    # file name (as in ImageSplit.files) -> keyed hash of its given group id (medclass.data.privacy); empty when the
    # source names no groups
    group_keys: dict[str, str] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """What every run on this data must say: leakage between splits, label conflicts that were allowed."""
        if self.identical is None:
            return []
        return self.identical.warnings()

    def sources(self, split: str) -> list[str]:
        """Where each image of ``split`` came from, in split order: the file's path for file sources, the npz file
        and array index for MedMNIST (``bloodmnist.npz:test_images[17]``), so any prediction can be looked up."""
        part = self.splits[split]
        if part.files is not None:
            root = self.source.get("root")
            return [str(Path(root) / name) if root else name for name in part.files]
        origin = Path(self.source["file"]).name if self.source.get("file") else self.name
        return [f"{origin}:{split}_images[{i}]" for i in range(len(part))]

    def locate(self, member: str) -> tuple[str, int] | None:
        """(split, index) of a "split:name" member as the duplicate checks name images (a file name, or
        ``test_images[17]`` for array sources), or None when this dataset has no such image."""
        split, _, name = member.partition(":")
        part = self.splits.get(split)
        if part is None:
            return None
        if part.files is not None:
            try:
                return split, part.files.index(name)
            except ValueError:
                return None
        prefix = f"{split}_images["
        if name.startswith(prefix) and name.endswith("]") and name[len(prefix) : -1].isdigit():
            index = int(name[len(prefix) : -1])
            return (split, index) if index < len(part) else None
        return None

    def split_group_keys(self, split: str) -> list[str] | None:
        """The keyed group hash of each image of ``split`` ("" for an image without a group), or None when the
        source names no groups."""
        files = self.splits[split].files
        if not self.group_keys or files is None:
            return None
        return [self.group_keys.get(name, "") for name in files]

    @property
    def channels(self) -> int:
        return int(self.splits["train"].images.shape[-1])

    @property
    def num_outputs(self) -> int:
        """Units of the classifier's last layer (one per class, or per label for multi-label)."""
        return len(self.classes)

    def summary(self) -> dict[str, Any]:
        """Counts per split and class, image shape and source: recorded in the run directory."""
        splits: dict[str, Any] = {}
        for name, split in self.splits.items():
            if is_single_label(self.task):
                counts = Counter(int(v) for v in split.labels)
                per_class = {c: counts.get(i, 0) for i, c in enumerate(self.classes)}
            else:
                per_class = {c: int(split.labels[:, i].sum()) for i, c in enumerate(self.classes)}
            splits[name] = {"n": len(split), "per_class": per_class}
        height, width = self.splits["train"].images.shape[1:3]
        return {
            "name": self.name,
            "task": self.task,
            "classes": self.classes,
            "image_shape": [int(height), int(width), self.channels],
            "splits": splits,
            "source": self.source,
            "skipped": len(self.skipped),
            **({"checks": self.identical.summary()} if self.identical is not None else {}),
            "warnings": self.warnings,
        }


class ArrayDataset(Dataset):
    """Serves (uint8 CHW tensor, label) pairs from an :class:`ImageSplit`; ``transform`` (training augmentation)
    takes each stored uint8 (H, W, C) image (read-only; it must not write to it) and returns a fresh uint8 CHW
    tensor. Conversion to float, resizing and normalisation happen later on whole batches."""

    def __init__(self, split: ImageSplit, transform: Callable[[np.ndarray], torch.Tensor] | None = None) -> None:
        self.images = split.images
        self.rows = split.rows
        self.labels = torch.from_numpy(np.asarray(split.labels))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``key`` is an index, or (index, seed) from an EpochSampler: the augmentation then depends on the seed
        alone, not on what else drew random numbers before."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        row = index if self.rows is None else int(self.rows[index])
        stored = np.asarray(self.images[row])
        if self.transform is None:
            return torch.from_numpy(stored.copy()).permute(2, 0, 1), self.labels[index]  # stores may be read-only
        if seed is None:
            return self.transform(stored), self.labels[index]
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone: torch.manual_seed also queues a CUDA seeding with a formatted stack trace
            # (torch.cuda._lazy_call), which took 3x as long as the 224 px augmentation itself.
            torch.default_generator.manual_seed(seed)
            return self.transform(stored), self.labels[index]
