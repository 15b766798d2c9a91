"""Robustness evaluation: each corruption at five severities on real images, and `medclass evaluate --corruptions`
on a real trained run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import assert_one_line_error, medclass

from medclass.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from medclass.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def blood_test_images(medmnist_dir: Path) -> np.ndarray:
    return np.load(medmnist_dir / "bloodmnist.npz")["test_images"][:64]


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_grow_with_severity_and_are_seeded(name: str, blood_test_images: np.ndarray) -> None:
    change = []
    for severity in SEVERITIES:
        out = corrupt(blood_test_images, name, severity, seed=3)
        assert out.shape == blood_test_images.shape and out.dtype == np.uint8
        change.append(float(np.abs(out.astype(np.int16) - blood_test_images).mean()))
    assert change[0] > 0, f"{name} changes the images at severity 1"
    assert change[-1] > change[0], f"{name}: severity 5 changes more than severity 1 ({change})"
    assert np.array_equal(corrupt(blood_test_images, name, 3, seed=3), corrupt(blood_test_images, name, 3, seed=3))
    grey = blood_test_images[..., :1]
    assert corrupt(grey, name, 5).shape == grey.shape, "grey images keep one channel"


def test_unknown_corruption_and_severity() -> None:
    images = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match="unknown corruption 'gausian_noise' \\(did you mean gaussian_noise"):
        corrupt(images, "gausian_noise", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(images, "jpeg", 6)


def test_evaluate_corruptions_on_a_real_run(blood_run: Path) -> None:
    result = medclass("evaluate", str(blood_run), "--corruptions", "gaussian_noise,jpeg", "--severities", "1,5")
    assert result.returncode == 0, result.stderr
    assert "AUC under corruptions" in result.stdout and "gaussian_noise" in result.stdout
    with (blood_run / "robustness" / "robustness.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["corruption"], r["severity"]) for r in rows] == [
        ("clean", "0"), ("gaussian_noise", "1"), ("gaussian_noise", "5"), ("jpeg", "1"), ("jpeg", "5")
    ]  # fmt: skip
    clean = json.loads((blood_run / "metrics.json").read_text())["metrics"]
    assert float(rows[0]["auc"]) == pytest.approx(clean["auc"], abs=1e-9), "clean row = the run's own test result"
    assert float(rows[2]["auc"]) < float(rows[0]["auc"]), "heavy noise costs AUC"
    assert all(0.0 <= float(r[m]) <= 1.0 for r in rows for m in ("acc", "auc", "f1_macro", "balanced_acc"))
    markdown = (blood_run / "robustness" / "robustness.md").read_text()
    assert "| **mean** |" in markdown and "drop at s5" in markdown
    assert (blood_run / "robustness" / "robustness.png").stat().st_size > 10_000


@pytest.mark.slow
def test_corruption_options_that_make_no_sense(blood_run: Path, tmp_path: Path) -> None:
    assert_one_line_error(medclass("evaluate", str(blood_run), "--corruptions", "fog"), "unknown corruption 'fog'")
    assert_one_line_error(medclass("evaluate", str(blood_run), "--corruptions", "all", "--severities", "0,9"),
                          "--severities: 0 is not a severity")  # fmt: skip
    assert_one_line_error(medclass("evaluate", str(blood_run), "--corruptions", "all", "--severities", "x"),
                          "give numbers from 1 to 5")  # fmt: skip
    assert_one_line_error(medclass("evaluate", str(tmp_path), "--corruptions", "all"), "not a run directory")


def test_a_collapse_to_one_class_is_flagged(blood_run: Path, breast_run) -> None:
    """ACC and AUC can look fair while the model answers one class for every image: balanced ACC and the
    collapse flag say so."""
    from medclass.evaluation.robustness import evaluate_corruptions

    healthy = evaluate_corruptions(blood_run, ["jpeg"], (1,))
    assert not healthy.clean["collapsed"] and not healthy.collapsed()
    assert "## balanced ACC" in healthy.files["markdown"].read_text()
    assert "Collapse" not in healthy.files["markdown"].read_text()

    result = evaluate_corruptions(breast_run.run_dir, ["gaussian_noise"], (1, 5))
    for row in [result.clean, *result.rows]:
        predictions = row["top_share"]
        assert 0.5 <= predictions <= 1.0 and row["collapsed"] == (predictions >= 0.95 and row["balanced_acc"] < 0.6)
    worst = result.row("gaussian_noise", 5)
    assert worst["collapsed"], worst  # noise this heavy leaves a two-epoch model one answer
    markdown = result.files["markdown"].read_text()
    assert "## Collapse" in markdown and f"gaussian_noise s5: {worst['top_share']:.0%} predicted" in markdown
    assert "† collapsed" in markdown
    with result.files["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"top_class", "top_share", "collapsed"} <= set(rows[0]) and rows[-1]["collapsed"] == "True"
