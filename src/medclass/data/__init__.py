"""Data: sources, in-memory datasets, transforms and the DataModule."""

from medclass.data.datamodule import ClassificationDataModule
from medclass.data.dataset import ArrayDataset, ImageSplit, LabelledImages
from medclass.data.sources import SOURCES, load_dataset, register_source
from medclass.data.transforms import AUGMENTATIONS, BatchPreprocess, build_augmentation

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
