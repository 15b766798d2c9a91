"""Framework overhead: medclass's training loop (Lightning module, data module, callbacks, schedule) against a
plain PyTorch loop written here, with the same model, data, batch size, optimizer and number of steps, in one
process.

    python benchmarks/overhead.py [--model resnet18] [--flag bloodmnist] [--batch-size 128] [--steps 60]
        [--on-device auto|true|false] [--augmentation none|light|medical]

Only training steps are timed (after ``--warmup`` steps, data loading included; validation and checkpoints at the
epoch's end are outside the window). The two loops alternate ``--repeats`` times. On a shared machine single runs
swing by 10-20%, so two ratios are printed: best medclass / best plain, and the median of the ratios of runs made
back to back (each pair sees nearly the same machine). 1.0 = no overhead; below 1.0 = slower than the plain loop.
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
import timm
import torch

from medclass.config import load_config
from medclass.data import ClassificationDataModule, build_augmentation, load_dataset
from medclass.run_dir import RunDir
from medclass.training.fit import build_module
from medclass.training.trainer import build_trainer


def config_for(args: argparse.Namespace, out: Path):
    return load_config(
        None,
        [f"output_dir={out}", f"model.name={args.model}", f"data.batch_size={args.batch_size}", "data.num_workers=0",
         f"data.augmentation={args.augmentation}", f"data.on_device={args.on_device}", "optimizer.name=adamw",
         "optimizer.lr=0.001", "optimizer.weight_decay=0.05",
         "scheduler.name=constant", "scheduler.warmup_epochs=0", "loss.label_smoothing=0", "trainer.max_epochs=1",
         f"trainer.limit_train_batches={args.warmup + args.steps}", "trainer.precision=32-true",
         "trainer.progress_bar=false", "evaluation.report=false", "evaluation.bootstrap=0"],
        experiment="overhead", data={"source": "medmnist", "flag": args.flag, "size": 28},
    )  # fmt: skip


class StepTimer(L.Callback):
    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.started = self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup + self.steps - 1:
            self.seconds = time.perf_counter() - self.started


def medclass_loop(args: argparse.Namespace, dataset) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(args, Path(tmp))
        L.seed_everything(0, verbose=False)
        module = build_module(config, dataset)
        timer = StepTimer(args.warmup, args.steps)
        trainer = build_trainer(config, RunDir.create(Path(tmp), "overhead"))
        trainer.callbacks.append(timer)
        trainer.fit(module, datamodule=ClassificationDataModule(dataset, config.data, config.seed))
    return args.steps * args.batch_size / timer.seconds


def plain_loop(args: argparse.Namespace, dataset) -> float:
    torch.manual_seed(0)
    split = dataset.splits["train"]
    stored = split.array()  # uint8 (N, H, W, C), what the per-image augmentation takes
    images = torch.from_numpy(stored).permute(0, 3, 1, 2).contiguous()  # uint8 (N, C, H, W)
    labels = torch.from_numpy(split.labels)
    # The strongest plain baseline: whole batches indexed out of the in-memory tensor (no per-sample collation).
    order = torch.randperm(len(labels))
    augment = build_augmentation(args.augmentation)
    batches = (i for i in order.split(args.batch_size) if len(i) == args.batch_size)
    if augment is None:
        loader = ((images[i], labels[i]) for i in batches)
    else:
        loader = ((torch.stack([augment(stored[j]) for j in i]), labels[i]) for i in batches)
    model = timm.create_model(args.model, num_classes=len(dataset.classes), in_chans=images.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    mean = torch.full((1, images.shape[1], 1, 1), 0.5)
    std = torch.full((1, images.shape[1], 1, 1), 0.5)
    model.train()
    started = 0.0
    for step, (batch, targets) in enumerate(loader):
        if step == args.warmup:
            started = time.perf_counter()
        x = (batch.float() / 255.0 - mean) / std
        loss = loss_fn(model(x), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == args.warmup + args.steps - 1:
            break
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--flag", default="bloodmnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--on-device", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--augmentation", default="none", choices=["none", "light", "medical"])
    args = parser.parse_args()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_dataset(config_for(args, Path(tmp)).data)
    plain, ours = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(args, dataset))
        ours.append(medclass_loop(args, dataset))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")  # fmt: skip
    print(f"{args.model} on {args.flag} 28 px, batch {args.batch_size}, {args.steps} timed steps, best of "
          f"{args.repeats}, augmentation {args.augmentation}, medclass data.on_device={args.on_device}")  # fmt: skip
    print(f"plain PyTorch loop: {max(plain):8.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in plain)})")
    print(f"medclass:           {max(ours):8.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in ours)})")
    pairs = sorted(o / p for o, p in zip(ours, plain, strict=True))
    print(f"ratio medclass / plain: best {max(ours) / max(plain):.3f}, median of pairs {pairs[len(pairs) // 2]:.3f}")


if __name__ == "__main__":
    main()
