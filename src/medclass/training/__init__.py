"""Training: the LightningModule, losses, optimiser recipe, callbacks, the Trainer and ``train`` (imported on first
use: see medclass.lazy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medclass.lazy import lazy_exports

if TYPE_CHECKING:
    from medclass.training.fit import TrainResult, resume, train
    from medclass.training.module import ClassificationModule

_EXPORTS = {
    "ClassificationModule": "medclass.training.module",
    "TrainResult": "medclass.training.fit",
    "resume": "medclass.training.fit",
    "train": "medclass.training.fit",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["ClassificationModule", "TrainResult", "resume", "train"]
