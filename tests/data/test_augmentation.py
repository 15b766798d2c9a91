"""Per-image training augmentation (OpenCV on the stored uint8 pixels): the same images as torchvision's flip and
bilinear affine for the same parameters, drawn as torchvision draws them, and fixed by the loader's per-image seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from medclass.data.dataset import ArrayDataset, ImageSplit
from medclass.data.transforms import AugmentationSpec, ImageAugmentation, build_augmentation


def _torchvision_replay(image: np.ndarray, spec: AugmentationSpec, seed: int) -> torch.Tensor:
    """Draw the parameters in ImageAugmentation's order from the same seed, and apply them with torchvision."""
    height, width = image.shape[:2]
    torch.manual_seed(seed)
    flip_x = spec.hflip and torch.rand(()) < 0.5
    flip_y = spec.vflip and torch.rand(()) < 0.5
    angle = float(torch.empty(()).uniform_(-spec.degrees, spec.degrees))
    tx = round(float(torch.empty(()).uniform_(-spec.translate * width, spec.translate * width)))
    ty = round(float(torch.empty(()).uniform_(-spec.translate * height, spec.translate * height)))
    scale = float(torch.empty(()).uniform_(*spec.scale))
    out = torch.from_numpy(image).permute(2, 0, 1)
    out = TF.horizontal_flip(out) if flip_x else out
    out = TF.vertical_flip(out) if flip_y else out
    return TF.affine(out, angle=angle, translate=[tx, ty], scale=scale, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.BILINEAR)  # fmt: skip


@pytest.fixture(scope="module")
def xray_pixels(xray: Path) -> np.ndarray:
    """A real chest X-ray at a non-square size (rows and columns must not be swapped anywhere)."""
    return np.array(Image.open(xray).convert("RGB").resize((96, 64)))


@pytest.mark.parametrize("channels", [3, 1])
def test_equals_torchvision_flip_and_affine(xray_pixels: np.ndarray, channels: int) -> None:
    image = np.ascontiguousarray(xray_pixels[:, :, :channels])
    spec = AugmentationSpec(hflip=True, vflip=True, degrees=15.0, translate=0.1, scale=(0.8, 1.2))
    augment = ImageAugmentation(spec)
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        ours = augment(image)
        theirs = _torchvision_replay(image, spec, seed)
        assert ours.shape == theirs.shape == (channels, 64, 96) and ours.dtype == torch.uint8
        difference = (ours.int() - theirs.int()).abs()
        assert float(difference.float().mean()) < 0.05 and int(difference.max()) <= 2, f"seed {seed}"
        assert float((ours.int() - torch.from_numpy(image).permute(2, 0, 1).int()).abs().float().mean()) > 1
        torch.manual_seed(seed)
        flips.add((bool(spec.hflip and torch.rand(()) < 0.5), bool(torch.rand(()) < 0.5)))
    assert len(flips) == 4, "every combination of flips was checked"


def test_loader_seed_fixes_the_augmentation_and_the_store_is_untouched(xray_pixels: np.ndarray) -> None:
    images = np.stack([xray_pixels, xray_pixels[::-1].copy()])
    images.setflags(write=False)  # stores are read-only memory maps
    before = images.copy()
    dataset = ArrayDataset(ImageSplit(images, np.array([0, 1])), build_augmentation("medical"))
    first, label = dataset[(1, 123)]
    assert first.shape == (3, 64, 96) and first.dtype == torch.uint8 and int(label) == 1
    torch.manual_seed(0)  # the global generator does not enter a seeded draw
    assert torch.equal(dataset[(1, 123)][0], first)
    assert not torch.equal(dataset[(1, 124)][0], first)
    state = torch.get_rng_state()
    dataset[(0, 5)]
    assert torch.equal(torch.get_rng_state(), state), "a seeded draw leaves the global generator where it was"
    assert np.array_equal(images, before)
    assert build_augmentation("none") is None
    plain = ArrayDataset(ImageSplit(images, np.array([0, 1])))[(1, 9)][0]
    assert torch.equal(plain, torch.from_numpy(before[1]).permute(2, 0, 1))
