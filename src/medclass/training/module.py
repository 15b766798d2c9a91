"""The LightningModule: batch preprocessing + network, the loss, validation metrics and the optimiser recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchmetrics import CatMetric

from medclass.config.schema import ExperimentConfig, LossConfig, OptimizerConfig, SchedulerConfig
from medclass.data.transforms import BatchPreprocess
from medclass.evaluation.metrics import classification_metrics
from medclass.models import create_model, default_normalization
from medclass.tasks import Task, scores_from_logits
from medclass.training.losses import build_loss
from medclass.training.optim import build_optimizer, build_scheduler

CHECKPOINT_FORMAT_VERSION = 1


def resolve_normalization(config: ExperimentConfig, net: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    """data.mean/std when given, else what data.normalization names ("dataset" needs the statistics passed in)."""
    data = config.data
    if data.mean is not None and data.std is not None:
        return data.mean, data.std
    if data.normalization == "imagenet":
        return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    if data.normalization == "half":
        return (0.5,) * 3, (0.5,) * 3
    if data.normalization == "dataset":
        raise ValueError("data.normalization=dataset: pass the training split's statistics (medclass.data.stats)")
    return default_normalization(net, config.model)


class ClassificationModule(L.LightningModule):
    """Takes uint8 image batches; ``forward`` returns logits. Validation computes the full metric set per epoch."""

    def __init__(
        self,
        net: nn.Module,
        preprocess: BatchPreprocess,
        task: Task,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        loss: LossConfig,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.preprocess = preprocess
        self.task = task
        self.optimizer_config = optimizer
        self.scheduler_config = scheduler
        self.criterion = build_loss(task, loss)
        self.metadata = dict(metadata or {})
        self.val_scores = CatMetric(nan_strategy="disable")
        self.val_targets = CatMetric(nan_strategy="disable")

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        task: Task,
        classes: list[str],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> ClassificationModule:
        """Build the network and preprocessing the config describes, for a dataset with these classes.

        ``mean``/``std`` are the normalisation to use when already known (the dataset's own statistics, or a
        checkpoint's); otherwise they follow data.mean/std or data.normalization."""
        net = create_model(config.model, num_classes=len(classes))
        if mean is None or std is None:
            mean, std = resolve_normalization(config, net)
        if config.model.in_chans == 1 and len(mean) == 3:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        preprocess = BatchPreprocess(config.model.in_chans, config.data.input_size, mean, std)
        metadata = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "task": task,
            "classes": list(classes),
            "model": config.model.name,
            "in_chans": config.model.in_chans,
            "image_size": config.data.input_size,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
        }
        return cls(net, preprocess, task, config.optimizer, config.scheduler, config.loss, metadata)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        loss = self.criterion(self(images), targets)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(images))
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=len(images))  # live value for the progress bar
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        self.log("val/loss", self.criterion(logits, targets), on_epoch=True, batch_size=len(images))
        self.val_scores.update(scores_from_logits(logits.float(), self.task))
        self.val_targets.update(targets)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_scores.compute().cpu().numpy()
        targets = self.val_targets.compute().cpu().numpy()
        self.val_scores.reset()
        self.val_targets.reset()
        metrics = classification_metrics(targets, scores, self.task)
        for name, value in metrics.items():
            self.log(f"val/{name}", float(value), prog_bar=name in ("acc", "auc"))

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = batch
        return scores_from_logits(self(images).float(), self.task), targets

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.net, self.optimizer_config)
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs or 1))
        scheduler = build_scheduler(optimizer, self.scheduler_config, total_steps, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medclass"] = dict(self.metadata)
