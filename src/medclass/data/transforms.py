"""Training augmentation presets (per image, on uint8 tensors) and the batch preprocessing every model sees.

Augmentation is the only per-image work; conversion to float, channel adaptation, resizing and normalisation run
on whole batches on the model's device (:class:`BatchPreprocess`), and travel with the model's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from medclass.registry import Registry

AUGMENTATIONS: Registry[Callable[[], Callable[[torch.Tensor], torch.Tensor] | None]] = Registry("augmentation")
register_augmentation = AUGMENTATIONS.register


@register_augmentation("none")
def _no_augmentation() -> None:
    return None


@register_augmentation("light")
def _light_augmentation() -> v2.Compose:
    """Horizontal flips and small shifts/rotations/scaling: safe for almost every modality."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        ]
    )


@register_augmentation("medical")
def _medical_augmentation() -> v2.Compose:
    """Flips both ways, rotations, crop-and-scale and mild intensity jitter (microscopy, dermatoscopy, fundus)."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(degrees=15, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.05),
        ]
    )


def build_augmentation(name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return AUGMENTATIONS.lookup(name, "data.augmentation")()


class BatchPreprocess(nn.Module):
    """uint8 (B, C, H, W) -> normalised float batch at the model's input size and channel count.

    Grey images are repeated to 3 channels for 3-channel models; RGB images become luminance for 1-channel models.
    """

    def __init__(self, in_chans: int, image_size: int | None, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) not in (1, in_chans) or len(std) != len(mean):
            raise ValueError(f"mean/std need 1 or {in_chans} values, got {len(mean)} and {len(std)}")
        self.in_chans = in_chans
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        channels = x.shape[1]
        if channels == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 3 and self.in_chans == 1:
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        elif channels != self.in_chans:
            raise ValueError(f"images have {channels} channels; the model takes {self.in_chans}")
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, image_size={self.image_size}"
