"""The one interface every model has, whatever builds it (timm or HuggingFace): pooled features from a backbone,
a head on top, the backbone/head parameter split, and the input size and normalisation the backbone expects."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_features: int,
        input_size: int | None,
        mean: Sequence[float],
        std: Sequence[float],
        family: str,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = num_features
        self.input_size = input_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.family = family
        self.weights_source = ""  # where the backbone's weights came from, in words (set by the factory)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (batch, num_features): embeddings for classical models. A head that pools the feature
        map itself (medclass.models.heads, ``feature_map=True``) pools it here too."""
        features = self.backbone(images)
        return self.head.pool(features) if features.ndim > 2 and hasattr(self.head, "pool") else features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, pooled features) from one pass of the backbone (the out-of-distribution gate needs both)."""
        features = self.backbone(images)
        pooled = self.head.pool(features) if features.ndim > 2 and hasattr(self.head, "pool") else features
        return self.head(features), pooled

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the backbone. A frozen backbone also keeps its normalisation statistics (eval mode)."""
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(trainable)
        self.backbone.train(trainable and self.training)
