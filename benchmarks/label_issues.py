"""How well does `medclass cv` find wrong labels (issue 37: "plant 5% flipped labels in a real set and report
precision/recall of the ranking")? A MedMNIST set's train and val labels get 5% flipped to another class (seeded; the
test split is untouched and unused), the shipped recipe runs as a k-fold cross-validation on the noisy copy, and the
label issues cleanlab ranks from the out-of-fold probabilities are compared with the planted flips: precision and
recall of the flagged set, and precision among the top N (N = the number planted).

    python benchmarks/label_issues.py --flag breastmnist --out benchmarks/results/label_issues_breastmnist.md
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medclass.config import load_config
from medclass.experiments.series import plan_cv, run_series

sys.path.insert(0, str(Path(__file__).resolve().parent))
from medmnist_reproduce import machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDCLASS_DATA", REPO.parent / "shared" / "data"))


def plant(source: Path, target: Path, share: float, n_classes: int, seed: int) -> set[str]:
    """A copy of the npz with ``share`` of the train and val labels moved to another class; the sources (as cv
    names them: ``<file>.npz:<split>_images[i]``) of the flipped images."""
    rng = np.random.default_rng(seed)
    arrays = dict(np.load(source))
    flipped = set()
    for split in ("train", "val"):
        labels = arrays[f"{split}_labels"].copy()
        picked = rng.choice(len(labels), round(share * len(labels)), replace=False)
        for i in picked:
            labels[i, 0] = (labels[i, 0] + rng.integers(1, n_classes)) % n_classes
            flipped.add(f"{target.name}:{split}_images[{i}]")
        arrays[f"{split}_labels"] = labels
    np.savez(target, **arrays)
    return flipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flag", default="breastmnist")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medclass-noisy-") as folder:
        root = Path(folder)
        source = DATA / "medmnist" / f"{args.flag}.npz"
        n_classes = int(np.load(source)["train_labels"].max()) + 1
        flipped = plant(source, root / f"{args.flag}.npz", args.share, n_classes, args.seed)
        config = load_config(REPO / "configs" / f"{args.flag}.yaml",
                             [f"output_dir={root / 'runs'}", f"data.root={root}", "data.download=false",
                              f"trainer.max_epochs={args.epochs}", "trainer.progress_bar=false",
                              "evaluation.report=false", "gate.fit=false"])  # fmt: skip
        started = time.perf_counter()
        result = run_series(plan_cv(config, args.folds))
        minutes = (time.perf_counter() - started) / 60
        assert result is not None and result.label_issues is not None
        with open(result.label_issues.files["csv"], newline="") as handle:
            ranked = [Path(row["source"]).name for row in csv.DictReader(handle)]
        n_images = result.label_issues.n_images
    found = set(ranked)
    hits = len(found & flipped)
    top = ranked[: len(flipped)]
    lines = [
        f"# Label issues found by `medclass cv` on {args.flag} with {args.share:.0%} of train+val labels flipped", "",
        f"Machine: {machine_line()}; {time.strftime('%Y-%m-%d')}. `python benchmarks/label_issues.py --flag "
        f"{args.flag} --folds {args.folds} --epochs {args.epochs}` ({minutes:.1f} min).", "",
        f"{len(flipped)} of {n_images} train+val labels flipped (seed {args.seed}); {args.folds}-fold cross-validation "
        f"of configs/{args.flag}.yaml at {args.epochs} epochs; cleanlab on the out-of-fold probabilities.", "",
        "| measure | value |", "|---|---:|",
        f"| flagged | {len(found)} |",
        f"| precision (flagged that were planted) | {hits / max(1, len(found)):.1%} ({hits}/{len(found)}) |",
        f"| recall (planted that were flagged) | {hits / len(flipped):.1%} ({hits}/{len(flipped)}) |",
        f"| precision of the top {len(flipped)} | {len(set(top) & flipped) / len(flipped):.1%} |",
        "",
        "Flagged images that were not planted are not all mistakes of the ranking: the published labels have errors "
        "of their own (BreastMNIST holds an image labelled malignant in train and benign in test).",
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
