"""The Lightning DataModule: train/val/test loaders over a :class:`LabelledImages` dataset."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from medclass.config.data import DataConfig
from medclass.data.dataset import ArrayDataset, LabelledImages
from medclass.data.transforms import build_augmentation


class ClassificationDataModule(L.LightningDataModule):
    def __init__(self, dataset: LabelledImages, config: DataConfig) -> None:
        super().__init__()
        self.dataset = dataset
        self.config = config

    def train_dataloader(self) -> DataLoader:
        split = self.dataset.splits["train"]
        batch_size = self.config.batch_size
        return self._loader(
            ArrayDataset(split, build_augmentation(self.config.augmentation)),
            batch_size,
            shuffle=True,
            # A last batch of one image breaks BatchNorm in training mode; drop it in that case only.
            drop_last=len(split) > batch_size and len(split) % batch_size == 1,
        )

    def val_dataloader(self) -> DataLoader:
        return self.split_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_dataloader("test")

    def split_dataloader(self, split: str) -> DataLoader:
        """Loader over a split in order, without augmentation (for validation, testing and prediction)."""
        batch_size = self.config.eval_batch_size or 2 * self.config.batch_size
        return self._loader(ArrayDataset(self.dataset.splits[split]), batch_size, shuffle=False, drop_last=False)

    def _loader(self, dataset: ArrayDataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
