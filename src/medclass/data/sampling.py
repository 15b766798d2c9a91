"""Training order and augmentation that depend only on (seed, epoch): the same whether a run went straight through
or was resumed, and whatever the number of loader workers.

Lightning creates the first epoch's data iterator (also after a resume) before any epoch hook runs, so seeding in
a hook cannot fix the order; the sampler therefore derives the order itself from the seed and the trainer's
current epoch, and hands every index to the dataset together with a seed for that image's augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_order(
    n: int, seed: int, epoch: int, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Generator]:
    """The epoch's order of the n images (a permutation, or a weighted draw with replacement), and the generator
    that drew it, to draw the epoch's augmentation seeds from next."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if weights is None:
        return torch.randperm(n, generator=generator), generator
    return torch.multinomial(weights, n, replacement=True, generator=generator), generator


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, augmentation seed): a permutation (or, with ``weights``, a weighted draw with replacement)
    seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int, epoch: Callable[[], int], weights: np.ndarray | None = None) -> None:
        self.n = n
        self.seed = seed
        self.epoch = epoch
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, generator = epoch_order(self.n, self.seed, self.epoch(), self.weights)
        seeds = torch.randint(0, 2**62, (self.n,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Draw probability of each image, 1 / (its class's count), so every class is seen equally often.
    Multi-label rows count towards their rarest label."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return 1.0 / np.bincount(labels)[labels]
    counts = np.maximum(labels.sum(axis=0), 1)
    return np.array([1.0 / counts[row > 0].min() if row.any() else 1.0 / len(labels) for row in labels])
