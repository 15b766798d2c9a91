"""Run a trained module over a loader and collect logits or class probabilities (evaluation and packaging use
this; the per-image prediction of files and services is medclass.inference.predictor)."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from medclass.config.schema import TrainerConfig
from medclass.tasks import scores_from_logits
from medclass.training.hardware import inference_precision
from medclass.training.module import ClassificationModule


def predict_scores(
    module: ClassificationModule, loader: DataLoader, trainer_config: TrainerConfig, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, targets) for every batch of ``loader``, in order."""
    logits, targets = predict_logits(module, loader, trainer_config, progress)
    return scores_from_logits(torch.from_numpy(logits), module.task).numpy(), targets


def predict_logits(
    module: ClassificationModule, loader: DataLoader, trainer_config: TrainerConfig, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) for every batch of ``loader``, in order, on the configured accelerator and precision."""
    trainer = L.Trainer(
        accelerator=trainer_config.accelerator,
        devices=1,
        precision=inference_precision(trainer_config.precision, trainer_config.accelerator),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )
    batches = trainer.predict(module, dataloaders=loader)
    logits = torch.cat([s for s, _ in batches]).float().cpu().numpy()
    targets = torch.cat([t for _, t in batches]).cpu().numpy()
    return logits, targets
