"""Fit the gate in front of a trained model: an out-of-distribution score on the training split's features, its
threshold on the validation split, and image-quality limits from the training images.

The detector is pytorch-ood's class-conditional Mahalanobis distance on the backbone's pooled features, chosen by
measurement (benchmarks/results/ood_detectors.md: best or within 0.002 AUROC of the best on every pair of chest
X-rays, brain MRI, DermaMNIST and BloodMNIST; the logit-based scores, energy and maximum softmax, fail on far
out-of-distribution images there). The threshold is the ``gate.accept`` quantile of the validation split's scores,
so that share of in-distribution images passes; the test split is never used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclass.data import LabelledImages, load_dataset
from medclass.data.dataset import ImageSplit
from medclass.data.images import DECODE_ERRORS, image_dimensions
from medclass.data.quality import MEASURES, fit_limits, measure, verdicts
from medclass.errors import UserError
from medclass.io import atomic_write_bytes, atomic_write_json
from medclass.models.gate import GATE_SETTINGS, GATE_TENSORS, MahalanobisScore, score_bytes
from medclass.run_dir import RunDir
from medclass.tasks import is_single_label
from medclass.training.module import ClassificationModule
from medclass.training.restore import load_module

log = logging.getLogger(__name__)

DETECTOR = "mahalanobis"
BATCH = 256


def gate_features(
    module: ClassificationModule, split: ImageSplit, rows: np.ndarray, device: torch.device
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pooled features (float32 (N, D)) and quality measures of the split's ``rows``, in order."""
    features, measures = [], {name: [] for name in MEASURES}
    with torch.inference_mode():
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            images = np.stack([split.image(int(i)) for i in chunk]).transpose(0, 3, 1, 2)  # (B, C, H, W) uint8
            for name, values in measure(images).items():
                measures[name].append(values)
            inputs = module.preprocess(torch.from_numpy(np.ascontiguousarray(images)).to(device))
            features.append(module.net.forward_features(inputs).float().flatten(1).cpu().numpy())
    return np.concatenate(features), {name: np.concatenate(values) for name, values in measures.items()}


def _sample(n: int, most: int, seed: int) -> np.ndarray:
    rows = np.arange(n)
    return rows if n <= most else np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def source_short_sides(dataset: LabelledImages, split: ImageSplit, rows: np.ndarray) -> np.ndarray:
    """The shorter side of each sampled image's source file (header only); the stored size for array sources."""
    if not split.files:
        return np.full(len(rows), min(split.images.shape[1:3]), dtype=np.float64)
    root = Path(dataset.source.get("root", "."))
    sides = []
    for i in rows[:5000]:  # the 1st percentile of 5,000 is as good as of all, and headers take time
        path = Path(split.files[int(i)])
        try:
            sides.append(min(image_dimensions(path if path.is_absolute() else root / path)))
        except (*DECODE_ERRORS, OSError):
            continue
    return np.asarray(sides, dtype=np.float64)


def fit_gate(run_dir: str | Path, checkpoint: str = "best", dataset: LabelledImages | None = None) -> dict[str, Any]:
    """Fit the run's gate for ``checkpoint`` and write it to the run's gate folder; returns its settings."""
    from pytorch_ood.detector import Mahalanobis

    run = RunDir.open(run_dir)
    run.check_format()
    config = run.load_config()
    if dataset is None:
        dataset = load_dataset(config.data)
    module, _ = load_module(config, dataset.task, dataset.classes, run.existing_checkpoint(checkpoint))
    device = torch.device("cuda" if torch.cuda.is_available() and config.trainer.accelerator != "cpu" else "cpu")
    module.to(device)
    settings = config.gate
    train, val = dataset.splits["train"], dataset.splits["val"]
    if len(val) < 20:
        raise UserError(f"the validation split has {len(val)} images; the gate's threshold needs at least 20")
    rows = _sample(len(train), settings.max_images, config.seed)
    features, measures = gate_features(module, train, rows, device)
    if is_single_label(dataset.task):
        present, labels = np.unique(np.asarray(train.labels)[rows], return_inverse=True)
    else:  # multi-label: one Gaussian for all training images
        present, labels = np.array([0]), np.zeros(len(rows), dtype=np.int64)
    detector = Mahalanobis(None).fit_features(torch.from_numpy(features).double(), torch.from_numpy(labels))
    score = MahalanobisScore(detector.mu, detector.precision)
    val_rows = _sample(len(val), settings.max_images, config.seed)
    val_features, val_measures = gate_features(module, val, val_rows, device)
    val_raw = score.raw(torch.from_numpy(val_features)).numpy()
    threshold = float(np.quantile(val_raw, settings.accept, method="higher"))
    if not (np.isfinite(threshold) and threshold > 0):
        raise UserError(f"the gate's threshold came out as {threshold}; the features of this model are degenerate")
    score.threshold.fill_(threshold)
    limits = fit_limits(measures, source_short_sides(dataset, train, rows))
    val_ood = score(torch.from_numpy(val_features)).numpy()
    problems = verdicts(val_measures, [None] * len(val_rows), limits)
    looks_fine = val_ood <= 1.0
    quality_ok = np.array([not p for p in problems])
    gate = {
        "detector": DETECTOR,
        "score": "smallest class-conditional Mahalanobis distance of the pooled features / threshold (1 = threshold)",
        "features": int(features.shape[1]),
        "classes_fitted": [dataset.classes[int(c)] for c in present] if is_single_label(dataset.task) else "all",
        "accept": settings.accept,
        "threshold_raw": threshold,
        "checkpoint": checkpoint,
        "fitted_on": {"train": len(rows), "val": len(val_rows)},
        "quality": limits,
        "val": {
            "in_distribution": round(float(looks_fine.mean()), 4),
            "quality_passed": round(float(quality_ok.mean()), 4),
            "accepted": round(float((looks_fine & quality_ok).mean()), 4),
        },
    }
    folder = run.gate_dir(checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / GATE_TENSORS, score_bytes(score))
    atomic_write_json(folder / GATE_SETTINGS, gate)  # last: a folder with settings holds a whole gate
    return gate
