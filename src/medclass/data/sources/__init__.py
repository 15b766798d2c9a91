"""Dataset sources: a registry from the config's ``data.source`` name to a loader, as timm registers models.

A loader takes the validated data config and returns :class:`~medclass.data.dataset.LabelledImages` with
train/val/test splits. Adding a source is adding one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable

from medclass.config.data import DataConfig
from medclass.data.dataset import LabelledImages
from medclass.errors import ConfigError, suggest

SourceLoader = Callable[[DataConfig], LabelledImages]
SOURCES: dict[str, SourceLoader] = {}


def register_source(name: str) -> Callable[[SourceLoader], SourceLoader]:
    def decorator(loader: SourceLoader) -> SourceLoader:
        SOURCES[name] = loader
        return loader

    return decorator


def load_dataset(config: DataConfig) -> LabelledImages:
    """Load the dataset the config describes, with its three splits."""
    loader = SOURCES.get(config.source)
    if loader is None:
        raise ConfigError(f"data.source: unknown source {config.source!r}{suggest(config.source, SOURCES)}")
    return loader(config)


# Built-in sources register themselves on import.
from medclass.data.sources import files as _files  # noqa: E402,F401
from medclass.data.sources import medmnist as _medmnist  # noqa: E402,F401
