"""Dataset sources: a registry from the config's ``data.source`` name to a loader, as timm registers models.

A loader takes the validated data config and returns :class:`~medclass.data.dataset.LabelledImages` with
train/val/test splits. Adding a source is adding one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable

from medclass.config.data import DataConfig
from medclass.data.dataset import LabelledImages
from medclass.registry import SOURCES

SourceLoader = Callable[[DataConfig], LabelledImages]
register_source = SOURCES.register


def load_dataset(config: DataConfig) -> LabelledImages:
    """Load the dataset the config describes, with its three splits."""
    return SOURCES.lookup(config.source, "data.source")(config)


# Built-in sources register themselves on import.
from medclass.data.sources import files as _files  # noqa: E402,F401
from medclass.data.sources import medmnist as _medmnist  # noqa: E402,F401
