"""The Lightning DataModule: train/val/test loaders over a :class:`LabelledImages` dataset."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from medclass.config.data import DataConfig
from medclass.data.dataset import ArrayDataset, LabelledImages
from medclass.data.sampling import EpochSampler, balanced_weights
from medclass.data.transforms import build_augmentation


class ClassificationDataModule(L.LightningDataModule):
    def __init__(self, dataset: LabelledImages, config: DataConfig, seed: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.config = config
        self.seed = seed

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        split = self.dataset.splits["train"]
        batch_size = self.config.batch_size
        weights = balanced_weights(split.labels) if self.config.sampler == "balanced" else None
        sampler = EpochSampler(len(split), self.seed, self._current_epoch, weights)
        return self._loader(
            ArrayDataset(split, build_augmentation(self.config.augmentation)),
            batch_size,
            shuffle=False,
            # A last batch of one image breaks BatchNorm in training mode; drop it in that case only.
            drop_last=len(split) > batch_size and len(split) % batch_size == 1,
            sampler=sampler,
        )

    def val_dataloader(self) -> DataLoader:
        return self.split_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_dataloader("test")

    def split_dataloader(self, split: str) -> DataLoader:
        """Loader over a split in order, without augmentation (for validation, testing and prediction)."""
        batch_size = self.config.eval_batch_size or 2 * self.config.batch_size
        return self._loader(ArrayDataset(self.dataset.splits[split]), batch_size, shuffle=False, drop_last=False)

    def _loader(
        self, dataset: ArrayDataset, batch_size: int, shuffle: bool, drop_last: bool, sampler: Sampler | None = None
    ) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
