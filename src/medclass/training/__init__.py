"""Training: the LightningModule, losses, optimiser recipe, callbacks, the Trainer and ``train``."""

from medclass.training.fit import TrainResult, resume, train
from medclass.training.module import ClassificationModule

__all__ = ["ClassificationModule", "TrainResult", "resume", "train"]
