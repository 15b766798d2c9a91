"""The Lightning DataModule: train/val/test loaders over a :class:`LabelledImages` dataset.

Training batches come either from a DataLoader (per-image augmentation in the loader) or, with ``data.on_device``,
from the training split held on the device, augmented per batch there (see medclass.data.resident)."""

from __future__ import annotations

import os

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from medclass.config.data import DataConfig
from medclass.data.dataset import ArrayDataset, LabelledImages
from medclass.data.resident import ResidentBatches, augment_batch, use_resident
from medclass.data.sampling import EpochSampler, balanced_weights
from medclass.data.transforms import (
    AugmentationSpec,
    augmentation_spec,
    build_augmentation,
    build_batch_augmentation,
)


class ClassificationDataModule(L.LightningDataModule):
    def __init__(self, dataset: LabelledImages, config: DataConfig, seed: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.config = config
        self.seed = seed
        self.resident = False  # set by train_dataloader: were training batches formed on the device?
        self._batch_augmentation: torch.nn.Module | None = None

    def _spec(self) -> AugmentationSpec | None:
        """The preset with the flips that keep sides sides (see medclass.data.transforms.flip_policy)."""
        return augmentation_spec(self.config, self.dataset.classes)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _device(self) -> tuple[torch.device, int]:
        if self.trainer is None:
            return torch.device("cpu"), 1
        return self.trainer.strategy.root_device, self.trainer.world_size

    def _workers(self) -> int:
        if self.config.num_workers != "auto":
            return self.config.num_workers
        if self._device()[0].type != "cuda":
            return 0
        return min(8, max(1, (os.cpu_count() or 2) - 1))

    def train_dataloader(self) -> DataLoader | ResidentBatches:
        split = self.dataset.splits["train"]
        batch_size = self.config.batch_size
        weights = balanced_weights(split.labels) if self.config.sampler == "balanced" else None
        # A last batch of one image breaks BatchNorm in training mode; drop it in that case only.
        drop_last = len(split) > batch_size and len(split) % batch_size == 1
        device, world_size = self._device()
        self.resident = use_resident(self.config.on_device, split, device, world_size)
        if self.resident:
            self._batch_augmentation = build_batch_augmentation(self._spec(), self.dataset.channels)
            if self._batch_augmentation is not None:
                self._batch_augmentation.to(device)
            return ResidentBatches(split, batch_size, self.seed, self._current_epoch, device, weights, drop_last)
        sampler = EpochSampler(len(split), self.seed, self._current_epoch, weights)
        return self._loader(
            ArrayDataset(split, build_augmentation(self._spec())),
            batch_size,
            shuffle=False,
            drop_last=drop_last,
            sampler=sampler,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Resident training batches carry their augmentation seed: augment them here, on the device."""
        if len(batch) == 3:
            images, labels, seed = batch
            return augment_batch(self._batch_augmentation, images, int(seed)), labels
        return batch

    def val_dataloader(self) -> DataLoader:
        return self.split_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_dataloader("test")

    def split_dataloader(self, split: str) -> DataLoader:
        """Loader over a split in order, without augmentation (for validation, testing and prediction)."""
        train_batch = self.config.batch_size if self.config.batch_size != "auto" else 128  # resolved in training
        batch_size = self.config.eval_batch_size or 2 * train_batch
        return self._loader(ArrayDataset(self.dataset.splits[split]), batch_size, shuffle=False, drop_last=False)

    def _loader(
        self, dataset: ArrayDataset, batch_size: int, shuffle: bool, drop_last: bool, sampler: Sampler | None = None
    ) -> DataLoader:
        workers = self._workers()
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            # Its own generator: an iterator draws a base seed per epoch, which must not come from (and shift) the
            # global generator that dropout and mixup use; workers 0 and N then train the same model.
            generator=torch.Generator().manual_seed(self.seed),
        )
