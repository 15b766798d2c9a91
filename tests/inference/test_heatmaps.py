"""Heatmaps for every class of every task on real images, and a map that shows nothing reported, never drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import medclass
from PIL import Image

from medclass import load_config
from medclass.config import ModelConfig
from medclass.inference.explain import heatmaps
from medclass.inference.package import load_package, package_from_run, save_package

REPO = Path(__file__).resolve().parents[2]


def real_images(medmnist_dir: Path, flag: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    npz = np.load(medmnist_dir / f"{flag}.npz")
    images = npz["test_images"][:n]
    images = images[..., None] if images.ndim == 3 else images
    return np.transpose(images, (0, 3, 1, 2)).copy(), npz["test_labels"][:n, 0]


def assert_informative_for_every_class(package, images: np.ndarray) -> None:
    for index, name in enumerate(package.classes):
        cams = heatmaps(package, images, [index] * len(images))
        assert cams.method == "hirescam"
        spread = np.ptp(cams.maps.reshape(len(images), -1), axis=1)
        assert not cams.degenerate.any() and (spread > 0.5).all(), f"class {name}: {spread}"


def test_binary_heatmaps_show_both_classes(breast_run, medmnist_dir: Path) -> None:
    """Grad-CAM gave BreastMNIST's malignant class an all-zero map; the default method must not."""
    package = load_package(package_from_run(breast_run.run_dir, out=breast_run.run_dir.parent / "breast-package"))
    images, _ = real_images(medmnist_dir, "breastmnist", 20)
    assert_informative_for_every_class(package, images)


@pytest.fixture(scope="module")
def blood_package(blood_run: Path):
    return load_package(package_from_run(blood_run))


def test_multiclass_heatmaps_show_every_class(blood_package, medmnist_dir: Path) -> None:
    images, _ = real_images(medmnist_dir, "bloodmnist", 8)
    assert_informative_for_every_class(blood_package, images)


def test_multilabel_heatmaps_show_every_label(tmp_path: Path, medmnist_dir: Path) -> None:
    """Two labels from real BreastMNIST images (benign; bright), trained for one epoch."""
    import lightning as L

    from medclass.data import ClassificationDataModule, ImageSplit, LabelledImages, load_dataset
    from medclass.training import ClassificationModule

    breast = load_dataset(load_config(None, experiment="t", data={"flag": "breastmnist"}).data)
    splits = {}
    for name, split in breast.splits.items():
        bright = (split.images.mean(axis=(1, 2, 3)) > 100).astype(np.float32)
        splits[name] = ImageSplit(split.images, np.stack([split.labels.astype(np.float32), bright], axis=1))
    dataset = LabelledImages("two-labels", "multilabel", ["benign", "bright"], splits)
    config = load_config(None, experiment="t", data={"flag": "breastmnist", "batch_size": 64, "input_size": 64})
    module = ClassificationModule.from_config(config, "multilabel", dataset.classes)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=ClassificationDataModule(dataset, config.data))
    preprocessing = {"decode_size": 28, "resize": "squash", "channels": 1, **module.metadata}
    preprocessing = {k: preprocessing[k] for k in ("decode_size", "resize", "channels", "in_chans", "mean", "std")}
    preprocessing["input_size"] = 64
    package = load_package(save_package(tmp_path / "ml", module.net.eval(), config.model, "multilabel",
                                        dataset.classes, preprocessing))  # fmt: skip
    images, _ = real_images(medmnist_dir, "breastmnist", 12)
    assert_informative_for_every_class(package, images)


def test_a_map_without_evidence_is_reported_not_drawn(blood_package, medmnist_dir: Path, tmp_path: Path) -> None:
    """A class whose score no location raises (here: its head row zeroed, the others pushed down so it is always
    the top class) has a constant map: flagged, and `predict --heatmaps` draws no overlay for it."""
    net = blood_package.net
    with torch.no_grad():
        net.head.weight[0].zero_()
        net.head.bias.fill_(-50.0)
        net.head.bias[0] = 0.0
    folder = save_package(tmp_path / "blind", net, ModelConfig(**blood_package.manifest["model"]), "multiclass",
                          blood_package.classes, blood_package.preprocessing)  # fmt: skip
    images, _ = real_images(medmnist_dir, "bloodmnist", 4)
    cams = heatmaps(load_package(folder), images, [0] * 4)
    assert cams.degenerate.all() and "no location that raises the score of 'basophil'" in cams.note(0, "basophil")
    for i, image in enumerate(np.transpose(images, (0, 2, 3, 1))):
        Image.fromarray(image).save(tmp_path / f"cell_{i}.png")
    result = medclass("predict", str(folder), str(tmp_path / "cell_*.png"), "--out", str(tmp_path / "p.csv"),
                      "--heatmaps", str(tmp_path / "maps"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("heatmap not drawn") == 4 and "0 drawn, 4 without evidence" in result.stdout
    assert list((tmp_path / "maps").glob("*.png")) == []
