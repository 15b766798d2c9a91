"""Sides stay sides: left-right flips are off where the images have sides (class names, data.laterality), said
in run.json and on the console, and asking for them there is refused; the same rule for up and down."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medclass.config.data import FolderData
from medclass.data.transforms import SIDE_WORDS, ImageAugmentation, augmentation_spec, classes_naming, flip_policy
from medclass.errors import ConfigError
from tests.cli_runner import assert_one_line_error, medclass

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name", ["kidney-left", "Kidney_Right", "lung L", "femur_r", "LeftLung", "rightKidney", "hip.sinistra", "DEXTER"]
)
def test_class_names_that_name_a_side(name: str) -> None:
    assert classes_naming(SIDE_WORDS, [name]) == [name]


@pytest.mark.parametrize("name", ["NORMAL", "PNEUMONIA", "glioma", "lateral", "bilateral", "liver", "rectum", "grade2"])
def test_class_names_without_a_side(name: str) -> None:
    assert classes_naming(SIDE_WORDS, [name]) == []


def test_the_policy_keeps_sides_and_refuses_flips_that_swap_them() -> None:
    plain = FolderData(root="/nowhere")
    assert flip_policy(plain, ["NORMAL", "PNEUMONIA"]).hflip  # light flips where nothing has a side
    sided = flip_policy(plain, ["kidney-left", "kidney-right", "liver"])
    assert not sided.hflip and "kidney-left, kidney-right name a side" in sided.sentence()
    declared = flip_policy(plain.model_copy(update={"laterality": True}), ["NORMAL", "PNEUMONIA"])
    assert not declared.hflip and "data.laterality" in declared.reasons[0]
    medical = plain.model_copy(update={"augmentation": "medical"})
    assert flip_policy(medical, ["a", "b"]).vflip
    up_down = flip_policy(medical, ["upper-lobe", "lower-lobe"])
    assert up_down.hflip and not up_down.vflip and "name up and down" in up_down.sentence()
    with pytest.raises(ConfigError, match="kidney-left, kidney-right name a side"):
        flip_policy(plain.model_copy(update={"hflip": True}), ["kidney-left", "kidney-right"])
    with pytest.raises(ConfigError, match="upper-lobe, lower-lobe name a direction"):
        flip_policy(medical.model_copy(update={"vflip": True}), ["upper-lobe", "lower-lobe"])
    # The user may say that names are not sides; then the flips stay, and that is said too.
    kept = flip_policy(plain.model_copy(update={"laterality": False}), ["L", "R"])
    assert kept.hflip and "do not name sides" in kept.reasons[0]
    with pytest.raises(ValueError, match="data.laterality: true"):
        FolderData(root="/nowhere", laterality=True, hflip=True)
    # preset none with a flip asked for: the flip alone
    alone = augmentation_spec(plain.model_copy(update={"augmentation": "none", "hflip": True}), ["a", "b"])
    assert alone is not None and alone.hflip and alone.degrees == 0 and alone.scale == (1.0, 1.0)


def test_an_image_with_sides_is_never_mirrored_in_training() -> None:
    # A real image, left half bright, right half dark: over many draws of the training augmentation the right half
    # never becomes the brighter one (a mirror would do that half of the time).
    image = np.zeros((32, 32, 1), np.uint8)
    image[:, :16] = 200
    spec = augmentation_spec(FolderData(root="/nowhere", laterality=True), ["NORMAL", "PNEUMONIA"])
    augment = ImageAugmentation(spec)
    torch.manual_seed(0)
    for _ in range(200):
        out = augment(image)[0].float()
        assert out[:, :12].mean() > out[:, 20:].mean() + 100
    free = ImageAugmentation(augmentation_spec(FolderData(root="/nowhere"), ["NORMAL", "PNEUMONIA"]))
    mirrored = sum(float((o := free(image)[0].float())[:, 20:].mean() > o[:, :12].mean()) for _ in range(200))
    assert 60 < mirrored < 140


@pytest.fixture(scope="module")
def sided_folder(module_tmp: Path, data_dir: Path) -> Path:
    """Two brain MRI classes renamed as sides (real images; the names are what matters here)."""
    root = module_tmp / "sides"
    for source, target in (("glioma", "kidney-left"), ("meningioma", "kidney-right")):
        (root / target).mkdir(parents=True)
        for path in sorted((data_dir / "brain_mri_4class" / source).glob("*.jpg"))[:24]:
            (root / target / path.name).symlink_to(path)
    return root


def test_training_on_sided_classes_turns_flips_off_and_says_so(sided_folder: Path, module_tmp: Path) -> None:
    common = ["experiment=sides", "data.source=folder", f"data.root={sided_folder}", "data.input_size=32",
              "trainer.max_epochs=1", "model.name=resnet18", "model.pretrained=false", "trainer.progress_bar=false",
              f"output_dir={module_tmp / 'runs'}", "evaluation.report=false", "evaluation.bootstrap=0"]  # fmt: skip
    trained = medclass("train", *common)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    output = trained.stdout + trained.stderr
    assert "left-right flips off: the classes kidney-left, kidney-right name a side" in output
    (run,) = (module_tmp / "runs").glob("*/*/run.json")
    augmentation = json.loads(run.read_text())["augmentation"]
    assert augmentation["preset"] == "light" and augmentation["hflip"] is False
    assert "kidney-left, kidney-right name a side" in augmentation["why"][0]
    refused = medclass("train", *common, "data.hflip=true")
    assert_one_line_error(refused, "data.hflip: true", "kidney-left, kidney-right name a side")
    assert len(list((module_tmp / "runs").glob("*/*/run.json"))) == 1  # refused before a run directory


def test_the_shipped_chest_xray_configs_declare_laterality() -> None:
    from medclass.config import load_config

    for name in ("chest_xray.yaml", "chest_xray_lite0.yaml", "presets/chest_xray_two_stage.yaml"):
        config = load_config(REPO / "configs" / name)
        policy = flip_policy(config.data, ["NORMAL", "PNEUMONIA"])
        assert not policy.hflip and not policy.vflip, name
