"""Training augmentation presets and the batch preprocessing every model sees.

A preset is a spec (:class:`AugmentationSpec`) built per image (OpenCV, in the DataLoader) or per batch
(kornia, on the training device; see medclass.data.resident). Conversion to float, channel adaptation, resizing
and normalisation always run on whole batches on the model's device (:class:`BatchPreprocess`), and travel with
the model's weights.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from medclass.config.data import LoaderFields
from medclass.errors import ConfigError
from medclass.registry import AUGMENTATIONS


@dataclass(frozen=True)
class AugmentationSpec:
    """One preset's random transforms, built two ways from the same numbers: per image with OpenCV
    (:func:`build_augmentation`, in the DataLoader) and per batch with kornia (:func:`build_batch_augmentation`,
    on the training device)."""

    hflip: bool = True
    vflip: bool = False
    degrees: float = 10.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0


AUGMENTATIONS.register("none")(None)
# Horizontal flips and small shifts/rotations/scaling. The flips are turned off where left and right matter (see
# flip_policy): chest radiographs, and classes that name a side.
AUGMENTATIONS.register("light")(AugmentationSpec())
# Flips both ways, rotations, crop-and-scale and mild intensity jitter (microscopy, dermatoscopy, fundus), with the
# same rule for both flips.
AUGMENTATIONS.register("medical")(
    AugmentationSpec(vflip=True, degrees=15.0, scale=(0.9, 1.1), brightness=0.1, contrast=0.1, saturation=0.05)
)
register_augmentation = AUGMENTATIONS.register


class ImageAugmentation:
    """One preset on a single uint8 (H, W, C) image, in the DataLoader; returns a uint8 (C, H, W) tensor.

    Flips and the affine warp (bilinear, black fill, about the image centre) run in OpenCV on the uint8 pixels:
    on this project's 2-core CPU at 224 px, torchvision's RandomAffine on a tensor took 0.76 ms per RGB image and
    cv2.warpAffine 0.09 ms, and the warp was what a training epoch's data path spent its time on. albumentations
    wraps the same cv2 call, but its maintained successor is AGPL-licensed, hence this one call here. The output
    equals torchvision's ``affine(..., interpolation=BILINEAR)`` for the same parameters (tested). Parameters are
    drawn as torchvision's RandomAffine draws them, from torch's generator, so a loader's per-image seeds fix them.
    Colour jitter, where the preset has it, is torchvision's ColorJitter on the warped tensor.
    """

    def __init__(self, spec: AugmentationSpec) -> None:
        self.spec = spec
        jitter = spec.brightness or spec.contrast or spec.saturation
        self.jitter = (
            v2.ColorJitter(brightness=spec.brightness, contrast=spec.contrast, saturation=spec.saturation)
            if jitter
            else None
        )

    def _uniform(self, low: float, high: float) -> float:
        return float(torch.empty(()).uniform_(low, high))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        import cv2

        spec = self.spec
        height, width, channels = image.shape
        flip_x = spec.hflip and torch.rand(()) < 0.5
        flip_y = spec.vflip and torch.rand(()) < 0.5
        angle = self._uniform(-spec.degrees, spec.degrees)
        tx = round(self._uniform(-spec.translate * width, spec.translate * width))
        ty = round(self._uniform(-spec.translate * height, spec.translate * height))
        scale = self._uniform(*spec.scale)
        # torchvision turns by -angle in OpenCV's convention, about the centre of the pixel grid.
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), -angle, scale)
        if flip_x or flip_y:  # fold the flips into the warp: one pass over the pixels
            flip = np.array([[-1.0 if flip_x else 1.0, 0, width - 1 if flip_x else 0],
                             [0, -1.0 if flip_y else 1.0, height - 1 if flip_y else 0], [0, 0, 1]])  # fmt: skip
            matrix = matrix @ flip
        matrix[:, 2] += (tx, ty)
        out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        tensor = torch.from_numpy(out.reshape(height, width, channels)).permute(2, 0, 1)  # cv2 drops a last axis of 1
        return tensor if self.jitter is None else self.jitter(tensor)


# Words of a class name that name a side or a direction (any case, any separator, camelCase split): a flip turns
# an image of one into the other while the label stays.
SIDE_WORDS = {"left", "right", "l", "r", "lt", "rt", "sinister", "sinistra", "sinistrum", "dexter", "dextra", "dextrum"}
UP_DOWN_WORDS = {"upper", "lower", "superior", "inferior", "top", "bottom", "cranial", "caudal", "up", "down"}


def _words(name: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return {w.lower() for w in re.split(r"[^A-Za-z]+", spaced) if w}


def classes_naming(words: set[str], classes: Sequence[str]) -> list[str]:
    """The classes whose name holds one of ``words`` (kidney-left, Lung_R, femurRight)."""
    return [c for c in classes if _words(str(c)) & words]


@dataclass(frozen=True)
class FlipPolicy:
    """Which flips training uses and why (run.json's ``augmentation``, said on the console)."""

    preset: str
    hflip: bool
    vflip: bool
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"preset": self.preset, "hflip": self.hflip, "vflip": self.vflip, "why": list(self.reasons)}

    def sentence(self) -> str:
        flips = " and ".join(n for n, on in (("left-right", self.hflip), ("upside-down", self.vflip)) if on)
        said = f"augmentation {self.preset}: " + (f"flips {flips}" if flips else "no flips")
        return said + ("; " + "; ".join(self.reasons) if self.reasons else "")


def flip_policy(config: LoaderFields, classes: Sequence[str]) -> FlipPolicy:
    """The flips of ``config``'s preset, minus those that would change what an image shows: left-right where the
    images have sides (data.laterality, or classes naming a side: a flipped "kidney-left" is a right kidney still
    labelled left), upside-down where classes name up and down. Asking for a flip there is a ConfigError that names
    the classes."""
    spec = AUGMENTATIONS.lookup(config.augmentation, "data.augmentation")
    hflip = spec.hflip if config.hflip is None and spec is not None else bool(config.hflip)
    vflip = spec.vflip if config.vflip is None and spec is not None else bool(config.vflip)
    reasons = []
    sided = classes_naming(SIDE_WORDS, classes)
    if sided and config.laterality is not False:
        if config.hflip:
            raise ConfigError(
                f"data.hflip: true would mirror left and right, and the classes {', '.join(sided)} name a side: a "
                "flipped image of one side would keep the other side's label; remove data.hflip (or set "
                "data.laterality: false if these names are not sides)"
            )
        if hflip:
            reasons.append(f"left-right flips off: the classes {', '.join(sided)} name a side")
        hflip = False
    elif sided and hflip:
        reasons.append(f"left-right flips kept: data.laterality: false says {', '.join(sided)} do not name sides")
    elif config.laterality:
        if hflip:
            reasons.append("left-right flips off: data.laterality says the images have sides that matter")
        hflip = False
    up_down = classes_naming(UP_DOWN_WORDS, classes)
    if up_down:
        if config.vflip:
            raise ConfigError(
                f"data.vflip: true would swap up and down, and the classes {', '.join(up_down)} name a direction: a "
                "flipped image would keep the other one's label; remove data.vflip"
            )
        if vflip:
            reasons.append(f"upside-down flips off: the classes {', '.join(up_down)} name up and down")
        vflip = False
    return FlipPolicy(config.augmentation, hflip, vflip, tuple(reasons))


def augmentation_spec(config: LoaderFields, classes: Sequence[str]) -> AugmentationSpec | None:
    """The preset of ``config`` with the flips :func:`flip_policy` allows (None: no augmentation at all)."""
    policy = flip_policy(config, classes)
    spec = AUGMENTATIONS.lookup(config.augmentation, "data.augmentation")
    if spec is None:  # preset none: flips only if asked for
        if not (policy.hflip or policy.vflip):
            return None
        spec = AugmentationSpec(degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    return dataclasses.replace(spec, hflip=policy.hflip, vflip=policy.vflip)


def _spec_of(preset: str | AugmentationSpec | None) -> AugmentationSpec | None:
    return AUGMENTATIONS.lookup(preset, "data.augmentation") if isinstance(preset, str) else preset


def build_augmentation(preset: str | AugmentationSpec | None) -> ImageAugmentation | None:
    """Per-image transform: uint8 (H, W, C) array in, uint8 (C, H, W) tensor out (see :class:`ImageAugmentation`).
    ``preset``: a registered name as it is, or a spec (training passes :func:`augmentation_spec`'s)."""
    spec = _spec_of(preset)
    return None if spec is None else ImageAugmentation(spec)


def build_batch_augmentation(preset: str | AugmentationSpec | None, channels: int) -> nn.Module | None:
    """The same preset on whole float batches in [0, 1] (B, C, H, W), each image with its own random draw: kornia
    does on the GPU (or CPU) in one call what torchvision does image by image."""
    import kornia.augmentation as K

    spec = _spec_of(preset)
    if spec is None:
        return None
    steps: list[nn.Module] = [K.RandomHorizontalFlip()] if spec.hflip else []
    if spec.vflip:
        steps.append(K.RandomVerticalFlip())
    steps.append(K.RandomAffine(degrees=spec.degrees, translate=(spec.translate,) * 2, scale=spec.scale, p=1.0))
    saturation = spec.saturation if channels == 3 else 0.0  # saturation means nothing for grey images
    if spec.brightness or spec.contrast or saturation:
        steps.append(K.ColorJitter(brightness=spec.brightness, contrast=spec.contrast, saturation=saturation, p=1.0))
    return K.AugmentationSequential(*steps)


class BatchPreprocess(nn.Module):
    """uint8 (B, C, H, W) -> normalised float batch at the model's input size and channel count.

    Grey images are repeated to 3 channels for 3-channel models; RGB images become luminance for 1-channel models.
    """

    def __init__(self, in_chans: int, input_size: int | None, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) not in (1, in_chans) or len(std) != len(mean):
            raise ValueError(f"mean/std need 1 or {in_chans} values, got {len(mean)} and {len(std)}")
        self.in_chans = in_chans
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        channels = images.shape[1]
        same_size = self.input_size is None or tuple(images.shape[-2:]) == (self.input_size, self.input_size)
        if (
            images.dtype == torch.uint8
            and same_size
            and (channels == self.in_chans or (channels, self.in_chans) == (1, 3))
        ):
            # The common cases in one multiply-add on the fresh float copy: (x / 255 - mean) / std took 2.8x as long
            # (three passes over the batch: 39 vs 14 ms for 64 images at 224 px on 2 CPU cores). Grey repeated to 3
            # channels gives exactly what the same image stored as R = G = B gives.
            scale, shift = 1.0 / (255.0 * self.std), -self.mean / self.std
            if channels == self.in_chans:
                return images.float().mul_(scale).add_(shift)
            return images.float().expand(-1, 3, -1, -1).mul(scale).add_(shift)
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if channels == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 3 and self.in_chans == 1:
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        elif channels != self.in_chans:
            raise ValueError(f"images have {channels} channels; the model takes {self.in_chans}")
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, input_size={self.input_size}"
