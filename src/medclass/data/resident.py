"""Training batches formed on the device: the training split held there as one uint8 tensor, each batch indexed
out of it and augmented as a whole (kornia), with no DataLoader workers, per-image Python work or host-to-device
copies. For MedMNIST-sized data on a GPU this keeps the GPU busy; on a CPU it is ~10x cheaper than per-image
augmentation for small images (28 px), and slower than it for large ones (224 px), hence :func:`use_resident`.

The order and every batch's augmentation depend only on (seed, epoch, batch index), like the per-image path's
:class:`~medclass.data.sampling.EpochSampler`, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from medclass.data.dataset import ImageSplit
from medclass.data.sampling import epoch_order

GPU_SHARE = 0.25  # at most this share of the GPU's memory for the resident images
CPU_MAX_SIDE = 64  # measured: batched augmentation beats per-image on a CPU up to about this size


def use_resident(setting: bool | str, split: ImageSplit, device: torch.device, devices: int) -> bool:
    """``data.on_device`` resolved: auto means on a single GPU when the images take at most a quarter of its
    memory, on a CPU for images up to 64 px; never in a multi-device run (each process would need its own shard).
    The worker count does not enter the choice, so data.num_workers never changes which augmentation (and so
    which model) a run gets."""
    if devices > 1:
        return False
    if setting != "auto":
        return bool(setting)
    shape = split.images.shape
    n_bytes = len(split) * int(np.prod(shape[1:]))
    if device.type == "cuda":
        return n_bytes <= GPU_SHARE * torch.cuda.get_device_properties(device).total_memory
    return device.type == "cpu" and max(shape[1:3]) <= CPU_MAX_SIDE


class ResidentBatches:
    """An iterable of (uint8 images (B, C, H, W), labels, augmentation seed) on ``device``, one pass per epoch.
    :func:`augment_batch` (called by the data module once the batch is on the device) applies the augmentation."""

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        seed: int,
        epoch: Callable[[], int],
        device: torch.device,
        weights: np.ndarray | None = None,
        drop_last: bool = False,
    ) -> None:
        self.images = torch.from_numpy(split.array()).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.from_numpy(np.asarray(split.labels)).to(device)
        self.batch_size, self.seed, self.epoch, self.drop_last = batch_size, seed, epoch, drop_last
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        order, generator = epoch_order(len(self.labels), self.seed, self.epoch(), self.weights)
        seeds = torch.randint(0, 2**62, (len(self),), generator=generator).tolist()
        order = order.to(self.images.device)
        for index, batch_seed in enumerate(seeds):
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield self.images[rows], self.labels[rows], batch_seed


def augment_batch(augmentation: nn.Module | None, images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 batch -> float batch in [0, 1], augmented with random draws that depend on ``seed`` alone."""
    x = images.float().div_(255.0)
    if augmentation is None:
        return x
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return augmentation(x).clamp_(0.0, 1.0)
