from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data_path
from medmnist import INFO
from PIL import Image

from medclass.config import load_config
from medclass.data import BatchPreprocess, ClassificationDataModule, load_dataset
from medclass.data.sources.medmnist import default_root, npz_filenames
from medclass.errors import ConfigError, DataError

NPZ_FILES = sorted((shared_data_path() / "medmnist").glob("*.npz"))  # none without the data: the tests are left out


def data_config(flag: str, **fields):
    return load_config(None, experiment="t", data={"flag": flag, **fields}).data


def test_shared_data_has_npz_files(medmnist_dir: Path) -> None:
    assert len(list(medmnist_dir.glob("*.npz"))) >= 3


@pytest.mark.parametrize("flag", [p.stem for p in NPZ_FILES])
def test_loads_every_shared_npz(flag: str) -> None:
    dataset = load_dataset(data_config(flag))
    info = INFO[flag]
    assert dataset.classes == [info["label"][str(i)] for i in range(len(info["label"]))]
    for split in ("train", "val", "test"):
        images, labels = dataset.splits[split].images, dataset.splits[split].labels
        assert len(images) == len(labels) == info["n_samples"][split]
        assert images.dtype == np.uint8 and images.shape[1:3] == (28, 28)
        assert images.shape[3] == info["n_channels"]
        assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() == len(dataset.classes) - 1
    assert dataset.source["file"].endswith(f"{flag}.npz")


def test_tasks_come_from_medmnist_metadata() -> None:
    assert load_dataset(data_config("breastmnist")).task == "binary"
    assert load_dataset(data_config("bloodmnist")).task == "multiclass"
    assert load_dataset(data_config("retinamnist")).task == "ordinal"


def test_grey_images_become_three_channels() -> None:
    dataset = load_dataset(data_config("breastmnist"))
    assert dataset.channels == 1
    loader = ClassificationDataModule(dataset, data_config("breastmnist", batch_size=8)).split_dataloader("test")
    images, _ = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (16, 1, 28, 28)
    batch = BatchPreprocess(in_chans=3, input_size=None, mean=(0.5,) * 3, std=(0.5,) * 3)(images)
    assert batch.shape == (16, 3, 28, 28)
    assert torch.equal(batch[:, 0], batch[:, 1]) and torch.equal(batch[:, 1], batch[:, 2])
    expected = (images[:, 0].float() / 255 - 0.5) / 0.5  # computed as one multiply-add: equal to float rounding
    assert torch.allclose(batch[:, 0], expected, atol=1e-6)


def test_preprocess_resizes_and_keeps_one_channel_models_grey() -> None:
    images = torch.from_numpy(load_dataset(data_config("bloodmnist")).splits["val"].images[:4]).permute(0, 3, 1, 2)
    batch = BatchPreprocess(in_chans=1, input_size=64, mean=(0.5,), std=(0.25,))(images)
    assert batch.shape == (4, 1, 64, 64)


def test_multilabel_chestmnist_style_labels_are_kept_as_vectors(tmp_path: Path) -> None:
    """ChestMNIST is multi-label: its (N, 14) label matrix must survive as float vectors. Built from real images."""
    source = np.load(load_dataset(data_config("breastmnist")).source["file"])
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": source[f"{s}_images"] for s in ("train", "val", "test")}
    arrays |= {
        f"{s}_labels": rng.integers(0, 2, (len(source[f"{s}_labels"]), 14)).astype(np.uint8)
        for s in ("train", "val", "test")
    }
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    dataset = load_dataset(data_config("chestmnist", root=str(tmp_path)))
    assert dataset.task == "multilabel"
    assert len(dataset.classes) == 14 and dataset.classes[0] == INFO["chestmnist"]["label"]["0"]
    assert dataset.splits["train"].labels.shape == (546, 14) and dataset.splits["train"].labels.dtype == np.float32


def test_reads_size_suffixed_files(tmp_path: Path) -> None:
    """Any size: <flag>_<size>.npz is read for sizes other than 28 (a real 64 px file made from the 28 px one)."""
    source = np.load(load_dataset(data_config("breastmnist")).source["file"])
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.stack(
            [np.asarray(Image.fromarray(im).resize((64, 64))) for im in source[f"{split}_images"]]
        )
        arrays[f"{split}_labels"] = source[f"{split}_labels"]
    np.savez(tmp_path / "breastmnist_64.npz", **arrays)
    dataset = load_dataset(data_config("breastmnist", size=64, root=str(tmp_path)))
    assert dataset.splits["train"].images.shape == (546, 64, 64, 1)
    assert dataset.name == "breastmnist_64"
    assert npz_filenames("bloodmnist", 224) == ["bloodmnist_224.npz"]
    assert npz_filenames("bloodmnist", 28) == ["bloodmnist.npz", "bloodmnist_28.npz"]


def test_root_comes_from_config_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path) -> None:
    assert default_root() == data_dir / "medmnist"
    monkeypatch.setenv("MEDCLASS_DATA", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("MEDCLASS_DATA")
    assert default_root() == Path.home() / ".medmnist"


def test_unknown_flag_suggests_close_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"data.flag: 'bloodmnst' is not a MedMNIST dataset \(did you mean bloodmnist"
    ):
        load_dataset(data_config("bloodmnst"))
    with pytest.raises(ConfigError, match="3D"):
        load_dataset(data_config("organmnist3d"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing_arrays"])
def test_corrupted_npz_is_a_clear_error(tmp_path: Path, medmnist_dir: Path, damage: str) -> None:
    target = tmp_path / "breastmnist.npz"
    if damage == "garbage":
        target.write_bytes(b"this is not a zip file" * 10)
    elif damage == "truncated":
        data = (medmnist_dir / "breastmnist.npz").read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:
        np.savez(target, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError) as err:
        load_dataset(data_config("breastmnist", root=str(tmp_path)))
    assert str(target) in str(err.value)
    assert "\n" not in str(err.value)


def test_offline_download_fails_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the network unreachable (a proxy on a closed local port), the error names the file and where to put it."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(DataError) as err:
        load_dataset(data_config("pneumoniamnist", root=str(tmp_path / "medmnist")))
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "medmnist" / "pneumoniamnist.npz") in message
    assert "downloading it failed" in message and "zenodo.org" in message
    assert not (tmp_path / "medmnist" / "pneumoniamnist.npz").exists()


def test_without_a_root_the_hint_and_the_download_go_to_the_users_folder(monkeypatch, tmp_path: Path) -> None:
    """$MEDCLASS_DATA is often a shared collection: a missing file is fetched into the medmnist package's own
    folder, and the hint says to put it there, never into the shared folder."""
    from medclass.data.sources.medmnist import package_root

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    shared = tmp_path / "shared"
    (shared / "medmnist").mkdir(parents=True)
    monkeypatch.setenv("MEDCLASS_DATA", str(shared))
    with pytest.raises(DataError) as err:
        load_dataset(data_config("pneumoniamnist"))
    message = str(err.value)
    assert f"put it at {package_root() / 'pneumoniamnist.npz'}" in message and str(shared) not in message
    assert not list(shared.rglob("*.npz"))


def test_no_download_when_disabled(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"bloodmnist_64.npz not found and data.download is false"):
        load_dataset(data_config("bloodmnist", size=64, root=str(tmp_path), download=False))


def test_copy_of_real_file_in_other_root_is_used(tmp_path: Path, medmnist_dir: Path) -> None:
    shutil.copy(medmnist_dir / "retinamnist.npz", tmp_path / "retinamnist_28.npz")
    dataset = load_dataset(data_config("retinamnist", root=str(tmp_path)))
    assert dataset.source["file"] == str(tmp_path / "retinamnist_28.npz")
