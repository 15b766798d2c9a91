"""Dataset sources: the config's ``data.source`` name -> a loader, as timm registers models.

A loader takes the validated data config and returns :class:`~medclass.data.dataset.LabelledImages` with
train/val/test splits. Adding a source is one module: its config class (a subclass of
:class:`~medclass.config.data.LoaderFields` with ``source: Literal["<name>"]``) and its loader, registered together
with ``@register_source("<name>", config=TheConfigClass)``; the config then accepts ``data: {source: <name>}``.
"""

from __future__ import annotations

from collections.abc import Callable

from medclass.config.data import DataConfig, LoaderFields
from medclass.data.dataset import LabelledImages
from medclass.data.folds import cross_validation_fold
from medclass.registry import SOURCE_CONFIGS, SOURCES

SourceLoader = Callable[[DataConfig], LabelledImages]


def register_source(name: str, config: type[LoaderFields] | None = None) -> Callable[[SourceLoader], SourceLoader]:
    """Register a loader under ``name``, and its config class when it brings one (the built-in sources' classes
    are registered in medclass.config.data)."""

    def decorator(loader: SourceLoader) -> SourceLoader:
        if config is not None:
            SOURCE_CONFIGS.register(name)(config)
        SOURCES.register(name)(loader)
        return loader

    return decorator


def load_dataset(config: DataConfig) -> LabelledImages:
    """Load the dataset the config describes, with its three splits (a cross-validation fold's, when
    ``data.fold`` is set)."""
    dataset = SOURCES.lookup(config.source, "data.source")(config)
    if config.fold is not None:
        dataset = cross_validation_fold(dataset, config.fold)
    return dataset


# Built-in sources register themselves on import.
from medclass.data.sources import files as _files  # noqa: E402,F401
from medclass.data.sources import medmnist as _medmnist  # noqa: E402,F401
