"""Losses per task: cross-entropy for single-label tasks (label smoothing, class weights, soft targets from
mixup/cutmix), soft ordinal targets for ordinal tasks, and BCE for multi-label tasks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medclass.config.recipe import LossConfig
from medclass.tasks import Task, is_single_label


def balanced_class_weights(counts: np.ndarray) -> torch.Tensor:
    """N / (C x n_c): each class contributes as if the classes were equally frequent."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


def sord_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Soft ordinal targets (Diaz & Marathe, CVPR 2019): softmax of minus the squared distance between grades, so
    predicting a neighbouring grade costs less than a distant one. No maintained package provides this."""
    grades = torch.arange(num_classes, device=labels.device, dtype=torch.float32)
    return torch.softmax(-((grades[None, :] - labels[:, None].float()) ** 2), dim=1)


class ClassificationLoss(nn.Module):
    """``forward(logits, targets)`` with hard targets (class indices, or 0/1 rows for multi-label) or soft
    single-label targets (rows of class probabilities, as mixup/cutmix make them)."""

    def __init__(
        self, task: Task, num_classes: int, config: LossConfig, class_counts: np.ndarray | tuple | None = None
    ) -> None:
        super().__init__()
        self.task = task
        self.num_classes = num_classes
        self.label_smoothing = config.label_smoothing
        self.sord = task == "ordinal" and config.ordinal == "sord"
        weights = None
        if config.class_weights == "balanced" and class_counts is not None:
            if is_single_label(task):
                weights = balanced_class_weights(class_counts)
            else:  # per label: negatives / positives, as BCE's pos_weight expects
                positives, total = np.asarray(class_counts[0], float), float(class_counts[1])
                weights = torch.tensor(np.maximum(total - positives, 1) / np.maximum(positives, 1), dtype=torch.float32)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if not is_single_label(self.task):
            targets = targets.float()
            if self.label_smoothing:
                targets = targets * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
            return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.weights)
        if targets.dim() == 1 and not self.sord:
            return F.cross_entropy(logits, targets.long(), weight=self.weights, label_smoothing=self.label_smoothing)
        soft = sord_targets(targets, self.num_classes) if targets.dim() == 1 else targets.float()
        per_class = -soft * F.log_softmax(logits, dim=1)
        if self.weights is not None:
            per_class = per_class * self.weights[None, :]
        return per_class.sum(dim=1).mean()
