"""The LightningModule: batch preprocessing + network, the loss, validation metrics and the staged recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torchmetrics import CatMetric

from medclass.config.schema import ExperimentConfig
from medclass.data.transforms import BatchPreprocess
from medclass.errors import ConfigError
from medclass.metrics import headline_metrics
from medclass.models import Classifier
from medclass.tasks import Task, is_single_label, scores_from_logits
from medclass.training.hardware import resolve_channels_last
from medclass.training.losses import ClassificationLoss
from medclass.training.network import build_network
from medclass.training.schedule import StagedLR, build_optimizer


class ClassificationModule(L.LightningModule):
    """Takes uint8 image batches; ``forward`` returns logits. Validation computes the full metric set per epoch."""

    def __init__(
        self,
        net: Classifier,
        preprocess: BatchPreprocess,
        task: Task,
        classes: list[str],
        config: ExperimentConfig,
        class_counts: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.preprocess = preprocess
        self.task = task
        self.classes = list(classes)
        self.config = config
        self.stages = config.resolved_stages()
        num_classes = len(classes)
        self.criterion = ClassificationLoss(task, num_classes, config.loss, class_counts)
        self.mixup = self._mixup(config, task, num_classes)
        self.metadata = dict(metadata or {})
        self._backbone_trainable: bool | None = None
        self._memory_format = torch.contiguous_format
        self.val_scores = CatMetric(nan_strategy="disable")
        self.val_targets = CatMetric(nan_strategy="disable")

    @staticmethod
    def _mixup(config: ExperimentConfig, task: Task, num_classes: int):
        loss = config.loss
        if loss.mixup_alpha == 0 and loss.cutmix_alpha == 0:
            return None
        if not is_single_label(task):
            raise ConfigError("loss.mixup_alpha/cutmix_alpha: mixing is for single-label tasks only")
        from timm.data import Mixup

        return Mixup(mixup_alpha=loss.mixup_alpha, cutmix_alpha=loss.cutmix_alpha, prob=loss.mix_prob,
                     label_smoothing=loss.label_smoothing, num_classes=num_classes)  # fmt: skip

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        task: Task,
        classes: list[str],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_counts: np.ndarray | None = None,
    ) -> ClassificationModule:
        """Build the network and preprocessing the config describes, for a dataset with these classes.

        ``mean``/``std`` are the normalisation to use when already known (the dataset's own statistics, or a
        checkpoint's); otherwise they follow data.mean/std or data.normalization."""
        network = build_network(config, task, classes, mean, std)
        return cls(network.net, network.preprocess, task, classes, config, class_counts, network.metadata)

    def on_fit_start(self) -> None:
        """The fast path: channels-last layout (what cuDNN's and oneDNN's fastest convolution kernels read; see
        training.hardware for when auto chooses it) and, when asked for, torch.compile. Both leave the weights'
        names and values as they are, so checkpoints do not change."""
        trainer_config = self.config.trainer
        channels_last = resolve_channels_last(
            trainer_config.channels_last, self.device.type, self.config.data.input_size
        )
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
            self._memory_format = torch.channels_last
        if trainer_config.compile:
            self.net.compile()

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return self.preprocess(images).contiguous(memory_format=self._memory_format)

    # Stages ------------------------------------------------------------------------------------------------
    def stage_for_epoch(self, epoch: int):
        return next((s for s in self.stages if epoch <= s.last_epoch), self.stages[-1])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Freeze or unfreeze the backbone for the current stage. Checked every batch: on a resume Lightning does
        not call the epoch-start hooks, and a stage must hold from the first batch all the same."""
        stage = self.stage_for_epoch(self.current_epoch)
        trainable = stage.train == "all"
        if self._backbone_trainable != trainable or self.net.backbone.training != trainable:
            self.net.set_backbone_trainable(trainable)
            self._backbone_trainable = trainable

    # Steps -------------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._inputs(images))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        inputs = self._inputs(images)
        if self.mixup is not None and len(inputs) % 2 == 0:
            inputs, targets = self.mixup(inputs, targets)
        loss = self.criterion(self.net(inputs), targets)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        if self.trainer.progress_bar_callback is not None:  # live value for the progress bar
            self.log("loss", loss, prog_bar=True, logger=False, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        self.log("val/loss", self.criterion(logits, targets), on_epoch=True, batch_size=len(images), sync_dist=True)
        self.val_scores.update(scores_from_logits(logits.float(), self.task))
        self.val_targets.update(targets)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_scores.compute().cpu().numpy()
        targets = self.val_targets.compute().cpu().numpy()
        self.val_scores.reset()
        self.val_targets.reset()
        metrics = headline_metrics(targets, scores, self.task)
        for name, value in metrics.items():
            self.log(f"val/{name}", float(value), prog_bar=name in ("acc", "auc"), sync_dist=True)
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            scheduler = self.lr_schedulers()
            if isinstance(scheduler, StagedLR):
                monitor = self.config.checkpoint.monitor
                value = float(self.trainer.callback_metrics[f"val/{monitor}"])
                scheduler.observe(value, self.config.checkpoint.resolved_mode)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> tuple[torch.Tensor, ...]:
        """Logits (not probabilities), so evaluation can fit a temperature; see training.predict."""
        images, targets = batch
        return self(images).float(), targets

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.net, self.config.optimizer)
        total_steps = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total_steps // max(1, self.config.total_epochs))
        scheduler = StagedLR(
            optimizer, self.stages, self.config.scheduler, steps_per_epoch,
            adam_without_decay=self.config.optimizer.name == "adam",
        )  # fmt: skip
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medclass"] = dict(self.metadata)
