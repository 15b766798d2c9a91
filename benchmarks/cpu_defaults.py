"""CPU training settings measured: torch threads, channels-last, bf16 autocast and torch.compile, each against
medclass's CPU default, on a shipped config, in one process.

    python benchmarks/cpu_defaults.py [--config configs/bloodmnist.yaml] [--batches 40] [--epochs 3]

Each setting trains --epochs epochs of --batches batches (same seed, same data); the time is the mean of the
epochs after the first (the first pays compilation and warm-up; validation is included), the accuracy the
validation AUC and accuracy after the last epoch. Printed: one row per setting and its speed ratio against the
default. A setting is worth adopting when it is faster at equal accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import tempfile
import warnings
from pathlib import Path

import torch

from medclass.config import load_config
from medclass.training import train

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default (32-bit, contiguous, eager, all threads)": [],
    "1 thread": ["THREADS=1"],
    "channels-last": ["trainer.channels_last=true"],
    "bf16 autocast": ["trainer.precision=bf16-mixed"],
    "torch.compile": ["trainer.compile=true"],
}


def run(config_path: Path, overrides: list[str], batches: int, epochs: int) -> dict[str, float]:
    threads = torch.get_num_threads()
    wanted = [o for o in overrides if o.startswith("THREADS=")]
    if wanted:
        torch.set_num_threads(int(wanted[0].split("=")[1]))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fixed = [f"output_dir={tmp}", f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={batches}",
                     "trainer.progress_bar=false", "gate.fit=false"]  # fmt: skip
            config = load_config(config_path, [*fixed, *(o for o in overrides if o not in wanted)])
            result = train(config)
            status = json.loads((result.run_dir / "run.json").read_text())
            seconds = [status["epoch_seconds"][str(e)] for e in range(2, epochs + 1)]
            with (result.run_dir / "epochs.csv").open() as handle:
                last = list(csv.DictReader(handle))[-1]
    finally:
        torch.set_num_threads(threads)
    return {
        "seconds": sum(seconds) / len(seconds),
        "val_auc": float(last["val_auc"]),
        "val_acc": float(last["val_acc"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bloodmnist.yaml")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides for every setting, e.g. data.input_size=224")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    flags = [f for f in ("avx512_bf16", "amx_bf16") if f in Path("/proc/cpuinfo").read_text()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({', '.join(flags) or 'no bf16 instructions'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config.name}, {args.epochs} epochs "
          f"of {args.batches} batches {' '.join(args.overrides)}")  # fmt: skip
    results = {
        name: run(args.config, [*args.overrides, *overrides], args.batches, args.epochs)
        for name, overrides in SETTINGS.items()
    }
    base = results[next(iter(SETTINGS))]["seconds"]
    print(f"{'setting':50s} {'s/epoch':>8s} {'speed':>6s} {'val AUC':>8s} {'val acc':>8s}")
    for name, r in results.items():
        print(f"{name:50s} {r['seconds']:8.2f} {base / r['seconds']:5.2f}x {r['val_auc']:8.4f} {r['val_acc']:8.4f}")


if __name__ == "__main__":
    main()
