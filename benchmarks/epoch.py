"""Whole epochs: `medclass train` with a shipped config against a plain script written here that does the same
work per epoch: the same model, data and batch size, the same augmentation preset applied to whole batches (kornia),
AdamW with warm-up + cosine per step, label smoothing, a validation pass with the monitored metric (AUC), and the
best and last checkpoints written each epoch.

    python benchmarks/epoch.py [--config configs/bloodmnist.yaml] [--epochs 3] [--repeats 2] [--profile out.txt]

Each side trains twice, for 1 and for --epochs epochs, and its time per epoch is (T_epochs - T_1) / (epochs - 1),
so start-up (data, model, Lightning's set-up) cancels out and what remains is whole epochs, checkpoints and
validation included. The sides alternate --repeats times (best of each). Printed: `whole-epoch ratio R` = plain
seconds per epoch / medclass seconds per epoch (1.0 = no overhead). --profile writes a cProfile of medclass's
longer run, sorted by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import math
import os
import platform
import pstats
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from medclass.config import load_config
from medclass.data import load_dataset
from medclass.data.transforms import build_batch_augmentation
from medclass.training import train

REPO = Path(__file__).resolve().parents[1]


def config_for(path: Path, out: Path, epochs: int):
    overrides = [f"output_dir={out}", f"trainer.max_epochs={epochs}", "trainer.progress_bar=false", "gate.fit=false"]
    return load_config(path, overrides)


def medclass_run(path: Path, epochs: int, profile: cProfile.Profile | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(path, Path(tmp), epochs)
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        train(config)
        if profile is not None:
            profile.disable()
        return time.perf_counter() - started


def plain_run(path: Path, epochs: int) -> float:
    """The same recipe, hand-written: what a careful user's own script would do per epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(path, Path(tmp), epochs)
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        dataset = load_dataset(config.data)
        train_split, val_split = dataset.splits["train"], dataset.splits["val"]
        images = torch.from_numpy(train_split.array()).permute(0, 3, 1, 2).contiguous()
        labels = torch.from_numpy(train_split.labels).long()
        val_images = torch.from_numpy(val_split.array()).permute(0, 3, 1, 2).contiguous()
        val_labels = val_split.labels
        model = timm.create_model(config.model.name, pretrained=False, num_classes=len(dataset.classes),
                                  in_chans=images.shape[1])  # fmt: skip
        augment = build_batch_augmentation(config.data.augmentation, images.shape[1])
        mean = torch.tensor([0.5] * images.shape[1]).view(1, -1, 1, 1)
        batch = config.data.batch_size
        steps_per_epoch = math.ceil(len(labels) / batch)
        total, warmup = epochs * steps_per_epoch, config.scheduler.warmup_epochs * steps_per_epoch
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr,
                                      weight_decay=config.optimizer.weight_decay)  # fmt: skip

        def rate(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        best = -1.0
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(labels))
            for start in range(0, len(labels), batch):
                index = order[start : start + batch]
                x = images[index].float().div_(255.0)
                if augment is not None:
                    x = augment(x).clamp_(0, 1)
                loss = F.cross_entropy(model((x - mean) / mean), labels[index],
                                       label_smoothing=config.loss.label_smoothing)  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            model.eval()
            with torch.inference_mode():
                chunks = [val_images[i : i + 2 * batch] for i in range(0, len(val_labels), 2 * batch)]
                scores = torch.cat([torch.softmax(model((c.float() / 255 - mean) / mean), dim=1) for c in chunks])
            scores = scores.numpy()
            if scores.shape[1] > 2:
                auc = roc_auc_score(val_labels, scores, multi_class="ovr")
            else:
                auc = roc_auc_score(val_labels, scores[:, 1])
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "auc": auc}
            torch.save(state, Path(tmp) / "last.ckpt")
            if auc > best:
                best = auc
                torch.save(state, Path(tmp) / "best.ckpt")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bloodmnist.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    per_epoch: dict[str, list[float]] = {"medclass": [], "plain": []}
    for _ in range(args.repeats):
        for name, run in (("medclass", medclass_run), ("plain", plain_run)):
            one, many = run(args.config, 1), run(args.config, args.epochs)
            per_epoch[name].append((many - one) / (args.epochs - 1))
    ours, theirs = min(per_epoch["medclass"]), min(per_epoch["plain"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.config.name}, {args.epochs} vs 1 epochs, "
          f"best of {args.repeats}")  # fmt: skip
    print(f"seconds per epoch: medclass {ours:.2f} (all: {np.round(per_epoch['medclass'], 2).tolist()}), "
          f"plain script {theirs:.2f} (all: {np.round(per_epoch['plain'], 2).tolist()})")  # fmt: skip
    print(f"whole-epoch ratio {theirs / ours:.2f}")
    if args.profile:
        profile = cProfile.Profile()
        medclass_run(args.config, args.epochs, profile)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(60)
        args.profile.write_text(text.getvalue())


if __name__ == "__main__":
    main()
