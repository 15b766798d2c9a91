"""Which out-of-distribution detector should medclass fit by default? (issue 21: "choose the default by
measurement"). For a trained run: the penultimate features and logits of its train, val and test splits and of
foreign image sets; every candidate detector of pytorch-ood fitted on the train split only; per foreign set the
AUROC (test split against the foreign images, OOD as positive) and FPR at 95% TPR from pytorch-ood's own metrics,
and the share of foreign images that a threshold set on the validation split (95% of validation images pass)
would accept.

    python benchmarks/ood_detectors.py RUN_DIR --ood brain_mri=../shared/data/brain_mri_4class \
        --ood dermamnist=../shared/data/dermamnist_jpeg28/images --out benchmarks/results/ood_detectors.md

Foreign images are decoded the way the run's model package reads new files (its decode size, resize and
channels), as `medclass predict` would; at most --limit of each set (evenly spread, sorted by name) are used.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_ood.detector import KNN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax, ViM
from pytorch_ood.metrics import OODMetrics

from medclass.data import ClassificationDataModule, load_dataset
from medclass.data.images import DECODE_ERRORS, load_image
from medclass.inference.package import load_package, run_package
from medclass.inference.predictor import collect_images
from medclass.run_dir import RunDir

PASS_RATE = 0.95


def _outputs(package, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, logits) of a uint8 (B, C, H, W) batch: the backbone runs once."""
    net = package.net
    with torch.inference_mode():
        raw = net.backbone(package.preprocess(images))
        logits = net.head(raw)
        features = net.head.pool(raw) if raw.ndim > 2 and hasattr(net.head, "pool") else raw
    return features.float(), logits.float()


def split_outputs(package, run: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    config = RunDir.open(run).load_config()
    dataset = load_dataset(config.data)
    loaders = ClassificationDataModule(dataset, config.data)
    out = {}
    for split in ("train", "val", "test"):
        feats, logits, labels = [], [], []
        for images, targets in loaders.split_dataloader(split):
            f, z = _outputs(package, images)
            feats.append(f), logits.append(z), labels.append(targets)
        out[split] = (torch.cat(feats), torch.cat(logits), torch.cat(labels))
    return out


def foreign_outputs(package, folder: str, limit: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    files, _ = collect_images([folder])
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    pre = package.preprocessing
    arrays = []
    for path in files:
        try:
            arrays.append(load_image(path, pre["decode_size"], pre["resize"], pre["channels"]))
        except DECODE_ERRORS:
            continue
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    feats, logits = [], []
    for start in range(0, len(images), 256):
        f, z = _outputs(package, images[start : start + 256])
        feats.append(f), logits.append(z)
    return torch.cat(feats), torch.cat(logits), len(arrays)


def detectors(package, train_features: torch.Tensor, train_labels: torch.Tensor) -> dict[str, tuple[object, str]]:
    """name -> (fitted detector, what it reads: 'logits' or 'features')."""
    found: dict[str, tuple[object, str]] = {
        "MSP": (MaxSoftmax(None), "logits"),
        "MaxLogit": (MaxLogit(None), "logits"),
        "Energy": (EnergyBased(None), "logits"),
        "Mahalanobis": (Mahalanobis(None).fit_features(train_features, train_labels), "features"),
        "kNN (k=50)": (KNN(None, k=50).fit_features(train_features, train_labels), "features"),
    }
    head = package.net.head
    if isinstance(head, torch.nn.Linear):
        d = min(train_features.shape[1] // 2, 64 if train_features.shape[1] > 128 else train_features.shape[1] // 2)
        vim = ViM(None, d=d, w=head.weight, b=head.bias).fit_features(train_features, train_labels)
        found[f"ViM (d={d})"] = (vim, "features")
    return found


def score(detector: object, reads: str, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        if reads == "logits":
            return detector.predict_logits(logits).float()
        return detector.predict_features(features).float()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--ood", action="append", required=True, help="NAME=FOLDER of foreign images")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    started = time.perf_counter()
    package = load_package(run_package(args.run))
    splits = split_outputs(package, args.run)
    train_f, _, train_y = splits["train"]
    found = detectors(package, train_f, train_y.long())
    foreign = {name: foreign_outputs(package, folder, args.limit)
               for name, folder in (item.split("=", 1) for item in args.ood)}  # fmt: skip
    rows = []
    for name, (detector, reads) in found.items():
        val_scores = score(detector, reads, *splits["val"][:2])
        threshold = torch.quantile(val_scores, PASS_RATE).item()
        test_scores = score(detector, reads, *splits["test"][:2])
        test_pass = (test_scores <= threshold).float().mean().item()
        for set_name, (features, logits, n) in foreign.items():
            ood_scores = score(detector, reads, features, logits)
            metrics = OODMetrics()
            metrics.update(test_scores, torch.zeros(len(test_scores), dtype=torch.long))
            metrics.update(ood_scores, -torch.ones(len(ood_scores), dtype=torch.long))
            result = metrics.compute()
            accepted = (ood_scores <= threshold).float().mean().item()
            rows.append((name, set_name, n, result["AUROC"], result["FPR95TPR"], test_pass, accepted))
    seconds = time.perf_counter() - started
    config = RunDir.open(args.run).load_config()
    lines = [
        f"# OOD detectors on {config.experiment} ({config.model.name}, {config.data.input_size} px)",
        "",
        f"Run: `{args.run}`; fitted on its train split ({len(train_y)} images), threshold on val "
        f"({len(splits['val'][2])}: {PASS_RATE:.0%} pass), scored against its test split ({len(splits['test'][2])}).",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}; pytorch-ood {__import__('pytorch_ood').__version__}; {seconds:.0f} s in all.",
        "",
        "| detector | foreign set | images | AUROC | FPR@95TPR | test accepted | foreign accepted |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, set_name, n, auroc, fpr, test_pass, accepted in rows:
        lines.append(f"| {name} | {set_name} | {n} | {auroc:.4f} | {fpr:.4f} | {test_pass:.3f} | {accepted:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
