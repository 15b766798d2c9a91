"""Data: sources, in-memory datasets, transforms and the DataModule (imported on first use: see medclass.lazy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medclass.lazy import lazy_exports

if TYPE_CHECKING:
    from medclass.data.datamodule import ClassificationDataModule
    from medclass.data.dataset import ArrayDataset, ImageSplit, LabelledImages
    from medclass.data.sources import SOURCES, load_dataset, register_source
    from medclass.data.transforms import AUGMENTATIONS, BatchPreprocess, build_augmentation

_EXPORTS = {
    "AUGMENTATIONS": "medclass.data.transforms",
    "ArrayDataset": "medclass.data.dataset",
    "BatchPreprocess": "medclass.data.transforms",
    "ClassificationDataModule": "medclass.data.datamodule",
    "ImageSplit": "medclass.data.dataset",
    "LabelledImages": "medclass.data.dataset",
    "SOURCES": "medclass.data.sources",
    "build_augmentation": "medclass.data.transforms",
    "load_dataset": "medclass.data.sources",
    "register_source": "medclass.data.sources",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "AUGMENTATIONS",
    "ArrayDataset",
    "BatchPreprocess",
    "ClassificationDataModule",
    "ImageSplit",
    "LabelledImages",
    "SOURCES",
    "build_augmentation",
    "load_dataset",
    "register_source",
]
