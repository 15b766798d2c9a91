"""An ensemble of trained models as one network: each member reads the same uint8 batch through its own
preprocessing, and the members' class probabilities are averaged.

The output is a logit vector whose softmax (sigmoid per label, multi-label) *is* the mean probability, so every
consumer of logits (predict, serve, ONNX, evaluation) treats the ensemble like any single model. Hand-written
because no maintained library combines independently trained timm/HF classifiers with their own preprocessing
behind one module that torch.onnx can export; the arithmetic is two lines."""

from __future__ import annotations

import torch
from torch import nn

from medclass.tasks import Task, is_single_label, scores_from_logits

TINY = 1e-12  # keeps log() finite for a probability of exactly 0; changes sums by at most members x 1e-12


class EnsembleNet(nn.Module):
    """``members``: modules taking uint8 (B, C, H, W) images to logits (each with its own preprocessing)."""

    family = "ensemble"

    def __init__(self, members: list[nn.Module], task: Task) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.task = task

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([scores_from_logits(m(images).float(), self.task) for m in self.members]).mean(dim=0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = self.probabilities(images)
        if is_single_label(self.task):
            return mean.clamp_min(TINY).log()
        mean = mean.clamp(TINY, 1 - 1e-7)
        return mean.log() - (-mean).log1p()

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The members' pooled features side by side (B, sum of their widths)."""
        return torch.cat([m.net.forward_features(m.preprocess(images)).float() for m in self.members], dim=1)

    @property
    def num_features(self) -> int:
        return sum(m.net.num_features for m in self.members)
