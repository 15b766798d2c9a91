"""Losses per task: cross-entropy with label smoothing for single-label tasks, BCE for multi-label."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medclass.config.schema import LossConfig
from medclass.tasks import Task, is_single_label


class SmoothedBCEWithLogits(nn.Module):
    """Binary cross-entropy on logits with targets pulled towards 0.5 by ``label_smoothing``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.float()
        if self.label_smoothing:
            targets = targets * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, targets)


def build_loss(task: Task, config: LossConfig) -> nn.Module:
    if is_single_label(task):
        return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    return SmoothedBCEWithLogits(config.label_smoothing)
