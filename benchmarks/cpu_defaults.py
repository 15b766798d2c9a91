"""CPU training settings measured: torch threads, channels-last, bf16 autocast and torch.compile, each against
medclass's CPU default, on a shipped config, in one process.

    python benchmarks/cpu_defaults.py [--config configs/bloodmnist.yaml] [--batches 40] [--epochs 3]
        [--settings default,bf16,...] [--test]

Each setting trains --epochs epochs of --batches batches (same seed, same data); the time is the mean of the
epochs after the first (the first pays compilation and warm-up; validation is included), the accuracy the
validation AUC and accuracy after the last epoch (with --test also the held-out test AUC and accuracy of the
best checkpoint, through medclass's own evaluation). Printed: one row per setting and its speed ratio against the
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
# short name: (row label, overrides); the first is the baseline every ratio is against.
SETTINGS = {
    "default": ("default (32-bit, contiguous, eager, all threads)",
                ["trainer.precision=32-true", "trainer.channels_last=false"]),
    "1thread": ("1 thread", ["THREADS=1"]),
    "channels-last": ("channels-last", ["trainer.channels_last=true"]),
    "bf16": ("bf16 autocast", ["trainer.precision=bf16-mixed"]),
    "bf16+channels-last": ("bf16 autocast + channels-last",
                           ["trainer.precision=bf16-mixed", "trainer.channels_last=true"]),
    "compile": ("torch.compile", ["trainer.compile=true"]),
}  # fmt: skip
DEFAULT_SETTINGS = ["default", "1thread", "channels-last", "bf16", "compile"]


def settings_list(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in SETTINGS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown setting(s) {', '.join(unknown) or '(none)'}: use {', '.join(SETTINGS)}"
        )
    return chosen


def run(config_path: Path, overrides: list[str], batches: int, epochs: int, test: bool) -> dict[str, float]:
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
            scores = {}
            if test:
                from medclass.evaluation import evaluate_run

                metrics = evaluate_run(result.run_dir, overrides={"bootstrap": 0}).metrics
                scores = {"test_auc": float(metrics["auc"]), "test_acc": float(metrics["acc"])}
    finally:
        torch.set_num_threads(threads)
    return {
        "seconds": sum(seconds) / len(seconds),
        "val_auc": float(last["val_auc"]),
        "val_acc": float(last["val_acc"]),
        **scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bloodmnist.yaml")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--settings",
        type=settings_list,
        default=DEFAULT_SETTINGS,
        help=f"comma-separated, from {', '.join(SETTINGS)}; the first is the baseline of the ratios",
    )
    parser.add_argument("--test", action="store_true", help="also evaluate each best checkpoint on the test split")
    parser.add_argument("overrides", nargs="*", help="config overrides for every setting, e.g. data.input_size=224")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    flags = [f for f in ("avx512_bf16", "amx_bf16") if f in Path("/proc/cpuinfo").read_text()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({', '.join(flags) or 'no bf16 instructions'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config.name}, {args.epochs} epochs "
          f"of {args.batches} batches {' '.join(args.overrides)}")  # fmt: skip
    results = {}
    for key in args.settings:
        label, overrides = SETTINGS[key]
        results[label] = run(args.config, [*args.overrides, *overrides], args.batches, args.epochs, args.test)
        print(f"{label}: {results[label]}", flush=True)
    base = next(iter(results.values()))["seconds"]
    columns = ["val AUC", "val acc"] + (["test AUC", "test acc"] if args.test else [])
    print(f"{'setting':50s} {'s/epoch':>8s} {'speed':>6s} " + " ".join(f"{c:>8s}" for c in columns))
    for name, r in results.items():
        values = [r["val_auc"], r["val_acc"]] + ([r["test_auc"], r["test_acc"]] if args.test else [])
        print(f"{name:50s} {r['seconds']:8.2f} {base / r['seconds']:5.2f}x " + " ".join(f"{v:8.4f}" for v in values))


if __name__ == "__main__":
    main()
