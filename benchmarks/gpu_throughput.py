"""Training throughput of medclass on the GPU (or whatever device there is): images/s for ResNet-18, ResNet-50 and
ViT-B/16 at 224 px, with synthetic data and with real chest X-rays, and the fraction of the device's bf16 peak
that the training FLOPs reach.

    python benchmarks/gpu_throughput.py [--models resnet18,resnet50,vit_base_patch16_224] [--input-size 224]
        [--batch-size 256] [--steps 30] [--warmup 15] [--data synthetic,real] [--precision auto] [--compile]
        [--peak-tflops N]

Every run is medclass's own training loop (Lightning module and data module, the GPU fast path as configured by
default: bf16 autocast, channels-last, training images held on the GPU and augmented there). Only training steps
are timed, after ``--warmup`` steps, with the device synchronised at both ends.

FLOPs per image are counted with torch.utils.flop_counter on one forward pass (multiply-adds x 2), times 3 for
forward + backward. The peak is the dense bf16 tensor-core figure of the device (a table of known GPUs below, or
``--peak-tflops``); on a CPU no fraction is printed.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from medclass.config import load_config
from medclass.data import ClassificationDataModule, load_dataset
from medclass.data.dataset import ImageSplit, LabelledImages
from medclass.run_dir import RunDir
from medclass.training.fit import build_module
from medclass.training.hardware import resolve_precision
from medclass.training.trainer import build_trainer

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.2}  # fmt: skip


def device_peak(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():  # the most specific names come first
        if key in name:
            return value
    return None


class StepTimer(L.Callback):
    """Wall time of training steps warmup .. warmup+steps-1 (device synchronised at both ends)."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.started = self.seconds = 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self._sync()
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup + self.steps - 1:
            self._sync()
            self.seconds = time.perf_counter() - self.started


def synthetic_dataset(n: int, size: int, classes: int = 2) -> LabelledImages:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)

    def split(k: int) -> ImageSplit:
        return ImageSplit(images[:k], rng.integers(0, classes, k).astype(np.int64))

    names = [f"class{i}" for i in range(classes)]
    return LabelledImages("synthetic", "multi-class", names, {"train": split(n), "val": split(64), "test": split(64)})


def config_for(args: argparse.Namespace, model: str, out: Path, data: dict):
    steps = args.warmup + args.steps
    return load_config(
        None,
        [f"output_dir={out}", f"model.name={model}", f"data.batch_size={args.batch_size}", "data.augmentation=light",
         f"data.input_size={args.input_size}", "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}",
         f"trainer.precision={args.precision}", f"trainer.compile={str(args.compile).lower()}",
         "trainer.progress_bar=false", "evaluation.report=false", "evaluation.bootstrap=0"],
        experiment="throughput", data=data,
    )  # fmt: skip


def training_flops_per_image(module, input_size: int, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, module.preprocess.in_chans, input_size, input_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.net(x)
    return 3.0 * counter.get_total_flops()


def measure(args: argparse.Namespace, model: str, dataset: LabelledImages, data: dict) -> tuple[float, float]:
    """(images/s, training FLOPs per image)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(args, model, Path(tmp), data)
        L.seed_everything(0, verbose=False)
        module = build_module(config, dataset)
        timer = StepTimer(args.warmup, args.steps)
        trainer = build_trainer(config, RunDir.create(Path(tmp), "throughput"))
        trainer.callbacks.append(timer)
        trainer.limit_val_batches = 1
        datamodule = ClassificationDataModule(dataset, config.data, config.seed)
        trainer.fit(module, datamodule=datamodule)
        flops = training_flops_per_image(module, args.input_size, module.device)
        path = "resident" if datamodule.resident else "DataLoader"
    print(f"  {model:24s} {path:10s} {args.steps * args.batch_size / timer.seconds:9.1f} images/s")
    return args.steps * args.batch_size / timer.seconds, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet50,vit_base_patch16_224")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--data", default="synthetic,real", help="synthetic, real (chest X-rays) or both")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="Device's dense bf16 peak; default: table.")
    args = parser.parse_args()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})"
    peak = args.peak_tflops or (device_peak(device_name) if cuda else None)
    precision = resolve_precision(args.precision, "auto")
    n_images = (args.warmup + args.steps) * args.batch_size
    print(f"device: {device_name}, torch {torch.__version__}, precision {precision}, compile {args.compile}, "
          f"batch {args.batch_size}, {args.input_size} px, {args.steps} timed steps after {args.warmup}")  # fmt: skip
    rows = []
    for kind in [k.strip() for k in args.data.split(",") if k.strip()]:
        if kind == "synthetic":
            dataset = synthetic_dataset(n_images, args.input_size)
            data = {"source": "medmnist", "flag": "pneumoniamnist", "size": 224}  # loader settings only
        elif kind == "real":
            with tempfile.TemporaryDirectory() as tmp:
                overrides = [f"data.input_size={args.input_size}", f"output_dir={tmp}"]
                real = load_config("configs/chest_xray.yaml", overrides)
            data = real.data.model_dump(mode="json")
            dataset = load_dataset(real.data)
        else:
            parser.error(f"--data: unknown kind {kind!r}; use synthetic, real or both")
        print(f"{kind} data: {len(dataset.splits['train'])} training images")
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            images_per_s, flops = measure(args, model, dataset, data)
            rows.append((kind, model, images_per_s, flops))
    print()
    print("| data | model | images/s | training GFLOP/image | TFLOP/s | share of bf16 peak |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, model, images_per_s, flops in rows:
        tflops = images_per_s * flops / 1e12
        share = f"{tflops / peak:.1%}" if peak else "n/a"
        print(f"| {kind} | {model} | {images_per_s:.1f} | {flops / 1e9:.2f} | {tflops:.2f} | {share} |")
    if peak:
        print(f"peak used: {peak} TFLOP/s dense bf16 ({device_name})")


if __name__ == "__main__":
    main()
