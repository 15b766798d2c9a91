"""The fast path: training batches held on the device and augmented per batch (kornia), channels-last, compile,
and ``data.batch_size: auto``. GPU-only behaviour (bf16 on a GPU, the GPU memory rule) is exercised on a CPU where
it has a CPU meaning; the GPU figures are in benchmarks/results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medclass import run_experiment
from medclass.config import load_config
from medclass.data.dataset import ImageSplit
from medclass.data.resident import ResidentBatches, augment_batch, use_resident
from medclass.data.transforms import build_batch_augmentation
from medclass.errors import ConfigError
from medclass.training.fit import resolve_batch_size
from medclass.training.network import read_checkpoint

CPU = torch.device("cpu")


def _split(n: int = 50, size: int = 28, channels: int = 3) -> ImageSplit:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return ImageSplit(images, np.arange(n, dtype=np.int64))


def test_resident_batches_depend_only_on_seed_and_epoch() -> None:
    split = _split()
    epoch = {"now": 2}
    batches = ResidentBatches(split, 16, seed=7, epoch=lambda: epoch["now"], device=CPU)
    first = list(batches)
    assert len(batches) == len(first) == 4 and [len(b[1]) for b in first] == [16, 16, 16, 2]
    labels = torch.cat([b[1] for b in first])
    assert sorted(labels.tolist()) == list(range(50)), "every image once per epoch"
    for images, batch_labels, _ in first:  # images travel with their own labels
        assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(split.images[batch_labels.numpy()]))
    again = list(ResidentBatches(split, 16, seed=7, epoch=lambda: 2, device=CPU))
    assert all(torch.equal(a[1], b[1]) and a[2] == b[2] for a, b in zip(first, again, strict=True))
    epoch["now"] = 3
    assert not torch.equal(torch.cat([b[1] for b in batches]), labels), "a new order every epoch"
    dropped = ResidentBatches(_split(33), 16, seed=7, epoch=lambda: 0, device=CPU, drop_last=True)
    assert len(dropped) == len(list(dropped)) == 2


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_augmentation_is_seeded_and_changes_images(channels: int) -> None:
    augmentation = build_batch_augmentation("medical", channels)
    images = torch.from_numpy(_split(8, channels=channels).images).permute(0, 3, 1, 2).contiguous()
    first, second = augment_batch(augmentation, images, 11), augment_batch(augmentation, images, 11)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert torch.equal(first, second) and 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert not torch.equal(first, augment_batch(augmentation, images, 12))
    assert not torch.allclose(first, images.float() / 255), "the images were transformed"
    assert torch.equal(augment_batch(None, images, 11), images.float() / 255)
    assert build_batch_augmentation("none", channels) is None


def test_when_batches_are_formed_on_the_device() -> None:
    small, large = _split(4, 28), _split(4, 224)
    assert use_resident("auto", small, CPU, devices=1)
    assert not use_resident("auto", large, CPU, devices=1), "per-image is faster at 224 px on CPU"
    assert not use_resident(True, small, CPU, devices=2), "DDP shards data through its sampler"
    assert use_resident(True, large, CPU, 1) and not use_resident(False, small, CPU, 1)


def _quick(tmp_path: Path, *overrides: str):
    return load_config(
        None,
        [f"output_dir={tmp_path}", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
         "trainer.progress_bar=false", "evaluation.report=false", "evaluation.bootstrap=0", "data.batch_size=32",
         *overrides],
        experiment="fast", data={"source": "medmnist", "flag": "breastmnist"},
    )  # fmt: skip


def test_both_data_paths_train_and_evaluate(tmp_path: Path) -> None:
    for setting in ("true", "false"):
        result = run_experiment(_quick(tmp_path / setting, f"data.on_device={setting}", "data.augmentation=medical"))
        assert 0.0 < result.test.metrics["auc"] <= 1.0
        assert (result.run_dir / "checkpoints" / "best.ckpt").is_file()


def test_channels_last_and_compile_keep_checkpoints_portable(tmp_path: Path) -> None:
    # resnet10t and one validation batch (78 images) keep torch.compile's work small: ~45 s on 2 CPU cores
    result = run_experiment(_quick(tmp_path, "model.name=resnet10t", "trainer.channels_last=true",
                                   "trainer.compile=true", "data.eval_batch_size=78"))  # fmt: skip
    state = read_checkpoint(result.run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert not any("_orig_mod" in key for key in state), "compiled weights keep their plain names"
    assert any(v.dim() == 4 and v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous()
               for v in state.values()), "convolution weights were kept channels-last"  # fmt: skip
    assert 0.0 < result.test.metrics["auc"] <= 1.0, "a plain (uncompiled) model loads them for evaluation"


@pytest.mark.slow
def test_auto_batch_size_is_measured_saved_and_recorded(tmp_path: Path) -> None:
    result = run_experiment(_quick(tmp_path, "model.name=mobilenetv3_small_050", "data.batch_size=auto"))
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["data"]["batch_size"]
    info = json.loads((result.run_dir / "run.json").read_text())["batch_size_auto"]
    assert isinstance(saved, int) and saved == info["chosen"], "the run's config keeps the number: a resume reuses it"
    assert saved & (saved - 1) == 0 and 1 <= saved <= 256 and saved <= info["max_fitting"]
    # batches 4 and 16, and a larger one when the images' share was lost in the measurement's noise
    assert info["bytes_per_image"] > 0 and {"4", "16"} <= set(info["measured"]) and info["device"] == "cpu"


def test_auto_batch_size_is_for_one_device(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="single-device runs"):
        resolve_batch_size(_quick(tmp_path, "data.batch_size=auto", "trainer.devices=2"), 546)
    fixed = _quick(tmp_path)
    assert resolve_batch_size(fixed, 546) == (fixed, None)


def test_precision_and_layout_auto_follow_the_cpu_and_the_input_size() -> None:
    from medclass.training.hardware import CPU_BF16_MIN_SIZE, cpu_has_bf16, resolve_channels_last, resolve_precision

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # torch's probe agrees with the kernel's flags
        assert cpu_has_bf16() == bool({"avx512_bf16", "amx_bf16"} & set(cpuinfo.read_text().split()))
    fast = cpu_has_bf16()
    assert resolve_precision("auto", "cpu", CPU_BF16_MIN_SIZE) == ("bf16-mixed" if fast else "32-true")
    assert resolve_precision("auto", "cpu", 28) == "32-true", "slower in bf16 at 28 px (cpu_defaults.md)"
    assert resolve_precision("auto", "cpu") == "32-true", "evaluation and prediction stay 32-bit on a CPU"
    assert (
        resolve_precision("32-true", "cpu", 224) == "32-true" and resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    )
    assert resolve_channels_last("auto", "cpu", 224) == fast and not resolve_channels_last("auto", "cpu", 28)
    assert resolve_channels_last("auto", "cuda", 28) and not resolve_channels_last(False, "cuda", 224)


def test_a_large_input_trains_on_the_cpu_fast_path_and_says_so(tmp_path: Path) -> None:
    from medclass.training.hardware import cpu_has_bf16

    result = run_experiment(_quick(tmp_path, "model.name=resnet10t", "data.input_size=128", "data.batch_size=16"))
    status = json.loads((result.run_dir / "run.json").read_text())
    fast = cpu_has_bf16()
    assert (status["precision"], status["channels_last"]) == (("bf16-mixed", True) if fast else ("32-true", False))
    state = read_checkpoint(result.run_dir / "checkpoints" / "best.ckpt")["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point()), "autocast keeps fp32 weights"
    assert 0.0 < result.test.metrics["auc"] <= 1.0
    assert all(np.isfinite(v) for v in result.test.metrics.values() if isinstance(v, float))
