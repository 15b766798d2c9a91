"""Embeddings for classical machine learning, and the classical baselines trained on them.

The network's pooled features of every split are saved to disk (``<split>.npz``: features, labels); logistic
regression, a linear SVM, kNN (k = 11) and a random forest (scikit-learn) are fitted on train, their
hyperparameters chosen on validation, and scored once on test with the same metrics as the rest of medclass.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from medclass.config import DataConfig, ModelConfig
from medclass.data import ClassificationDataModule, LabelledImages, load_dataset
from medclass.data.transforms import BatchPreprocess
from medclass.errors import UserError
from medclass.inference.package import is_package, load_package, run_package
from medclass.io import atomic_write_bytes, atomic_write_text
from medclass.metrics import METRICS, summary_metrics
from medclass.models import create_model, default_normalization
from medclass.run_dir import RunDir
from medclass.tasks import is_single_label

log = logging.getLogger("medclass")


@dataclass
class FeatureModel:
    """A feature extractor: uint8 (B, C, H, W) -> (B, D) embeddings, and where it came from."""

    net: Any  # Classifier
    preprocess: Any  # BatchPreprocess
    description: str
    fine_tuned_test: dict[str, float] = field(default_factory=dict)  # the fine-tuned model's own test metrics

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net.forward_features(self.preprocess(images)).float()


def feature_model(spec: str, data: DataConfig) -> FeatureModel:
    """A medclass model (package or run directory), or a backbone by name (``timm:name``/bare name, pretrained
    weights when available offline) with its own normalisation at the data's input size."""
    path = Path(spec)
    if path.is_dir():
        if not is_package(path):
            if not RunDir.is_run_dir(path):
                raise UserError(f"{path} is neither a model package nor a run directory")
            path = run_package(path)
        package = load_package(path)
        test = package.manifest.get("source", {}).get("test_metrics", {})
        return FeatureModel(package.net, package.preprocess, f"medclass model {spec}", test)
    config = ModelConfig(name=spec, pretrained=True)
    net = create_model(config, num_classes=2).eval()  # the head is unused: features come before it
    mean, std = default_normalization(net, config)
    preprocess = BatchPreprocess(config.in_chans, data.input_size, mean, std).eval()
    return FeatureModel(net, preprocess, f"{spec} (pretrained, not fine-tuned)")


def extract(model: FeatureModel, dataset: LabelledImages, data: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    loaders = ClassificationDataModule(dataset, data)
    out = {}
    for split in dataset.splits:
        features, labels = [], []
        for images, targets in loaders.split_dataloader(split):
            features.append(model.embed(images).numpy())
            labels.append(targets.numpy())
        out[split] = (np.concatenate(features), np.concatenate(labels))
    return out


def _candidates(seed: int) -> dict[str, list[Any]]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic_regression": [
            make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)) for c in (0.01, 0.1, 1.0, 10.0)
        ],
        # A linear SVM fitted by SGD on the hinge loss: the same model as LinearSVC, but LinearSVC takes many
        # minutes on ten thousand 1280-dimensional embeddings where SGD takes seconds.
        "linear_svm": [
            make_pipeline(StandardScaler(), SGDClassifier(loss="hinge", alpha=alpha, random_state=seed))
            for alpha in (1e-4, 1e-3, 1e-2)
        ],
        "knn_11": [make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=11))],
        "random_forest": [
            RandomForestClassifier(n_estimators=200, max_depth=depth, n_jobs=-1, random_state=seed)
            for depth in (None, 16)
        ],
    }


def _scores(model: Any, features: np.ndarray) -> np.ndarray:
    """Class probabilities; for the SVM, a softmax of its decision values (ranking is what AUC needs)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(features)
    decision = model.decision_function(features)
    if decision.ndim == 1:
        decision = np.stack([-decision, decision], axis=1)
    decision = decision - decision.max(axis=1, keepdims=True)
    exp = np.exp(decision)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class BaselineRow:
    name: str
    params: str
    val_auc: float
    test: dict[str, float]
    fit_seconds: float


def fit_baselines(splits: dict[str, tuple[np.ndarray, np.ndarray]], task: str, seed: int) -> list[BaselineRow]:
    """Each classifier: every candidate fitted on train, the best validation AUC kept, scored once on test."""
    x_train, y_train = splits["train"]
    x_val, y_val = splits["val"]
    x_test, y_test = splits["test"]
    rows = []
    for name, candidates in _candidates(seed).items():
        best, best_auc, best_seconds = None, -np.inf, 0.0
        for candidate in candidates:
            started = time.perf_counter()
            with warnings.catch_warnings():
                # an iteration cap reached is fine here: validation decides which candidate is kept
                warnings.simplefilter("ignore", ConvergenceWarning)
                candidate.fit(x_train, y_train)
            seconds = time.perf_counter() - started
            auc = summary_metrics(y_val, _scores(candidate, x_val), task)["auc"]  # type: ignore[arg-type]
            if auc > best_auc:
                best, best_auc, best_seconds = candidate, auc, seconds
        test = summary_metrics(y_test, _scores(best, x_test), task)  # type: ignore[arg-type]
        tuned = ("C", "alpha", "max_depth", "n_neighbors")
        params = {k: v for k, v in best.get_params().items() if k.split("__")[-1] in tuned}
        rows.append(BaselineRow(name, ", ".join(f"{k.split('__')[-1]}={v}" for k, v in params.items()),
                                float(best_auc), test, best_seconds))  # fmt: skip
        log.info("%s: val AUC %.4f, test AUC %.4f", name, best_auc, test["auc"])
    return rows


@dataclass
class FeaturesResult:
    out: Path
    rows: list[BaselineRow]
    fine_tuned: dict[str, float]
    files: dict[str, Path]


def run_features(model_spec: str, data: DataConfig, out: Path, seed: int = 42) -> FeaturesResult:
    """Extract features of every split to ``out`` and compare the classical baselines with the model."""
    dataset = load_dataset(data)
    if not is_single_label(dataset.task):
        raise UserError(f"{dataset.name} is a multi-label dataset; classical baselines support single-label tasks")
    model = feature_model(model_spec, data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = extract(model, dataset, data)
    files: dict[str, Path] = {}
    for split, (features, labels) in splits.items():
        buffer = io.BytesIO()
        np.savez_compressed(buffer, features=features, labels=labels, classes=np.array(dataset.classes),
                            sources=np.array(dataset.sources(split)))  # fmt: skip
        files[split] = atomic_write_bytes(out / f"{split}.npz", buffer.getvalue())
    rows = fit_baselines(splits, dataset.task, seed)
    files.update(write_table(out, rows, model, dataset))
    return FeaturesResult(out, rows, model.fine_tuned_test, files)


def write_table(out: Path, rows: list[BaselineRow], model: FeatureModel, dataset: LabelledImages) -> dict[str, Path]:
    metrics = METRICS.names("headline")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["classifier", "params", "val_auc", *(f"test_{m}" for m in metrics), "fit_seconds"])
    for row in rows:
        writer.writerow([row.name, row.params, f"{row.val_auc:.4f}", *(f"{row.test[m]:.4f}" for m in metrics),
                         f"{row.fit_seconds:.1f}"])  # fmt: skip
    if model.fine_tuned_test:
        writer.writerow(["fine-tuned network", "", "", *(f"{model.fine_tuned_test.get(m, float('nan')):.4f}"
                                                          for m in metrics), ""])  # fmt: skip
    files = {"csv": atomic_write_text(out / "baselines.csv", buffer.getvalue())}
    lines = [f"# Classical baselines on {model.description} features: {dataset.name}", "",
             f"Features: {out}/<split>.npz; hyperparameters chosen on validation AUC; numbers on the test split.", "",
             "| classifier | params | val AUC | " + " | ".join(f"test {m}" for m in metrics) + " |",
             "|---|---|---:|" + "---:|" * len(metrics)]  # fmt: skip
    for row in rows:
        lines.append(f"| {row.name} | {row.params} | {row.val_auc:.4f} | "
                     + " | ".join(f"{row.test[m]:.4f}" for m in metrics) + " |")  # fmt: skip
    if model.fine_tuned_test:
        values = " | ".join(f"{model.fine_tuned_test.get(m, float('nan')):.4f}" for m in metrics)
        lines.append(f"| **fine-tuned network** | | | {values} |")
    files["markdown"] = atomic_write_text(out / "baselines.md", "\n".join(lines) + "\n")
    return files
