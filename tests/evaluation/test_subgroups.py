"""Subgroup results: on a real CSV dataset with metadata columns (DermaMNIST JPEGs, nevus vs other, with a sex,
an age and a site per lesion), every subgroup's numbers equal those computed by hand (scikit-learn) from the run's
own predictions; small subgroups are kept; identifying attributes are refused."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import assert_one_line_error, medclass
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from medclass.errors import ConfigError


def _metadata(lesion: str) -> dict[str, str]:
    digest = int(hashlib.sha256(lesion.encode()).hexdigest(), 16)
    return {
        "sex": ("female", "male")[digest % 2],
        "age": str(5 + digest % 85) if digest % 17 else "",  # some ages missing
        "site": ("A", "B", "C", "tiny")[min(3, digest % 13 // 4)],  # site 'tiny' is rare
    }


@pytest.fixture(scope="module")
def derma_csv(data_dir: Path, module_tmp: Path) -> Path:
    """900 DermaMNIST images with a binary label and metadata columns, as a label CSV beside the JPEGs."""
    source = data_dir / "dermamnist_jpeg28"
    with open(source / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:900]
    out = module_tmp / "derma.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image_id", "label", "lesion_id", "sex", "age", "site"])
        writer.writeheader()
        for row in rows:
            label = "nevus" if row["dx"] == "nv" else "other"
            writer.writerow({"image_id": row["image_id"], "label": label, "lesion_id": row["lesion_id"],
                             **_metadata(row["lesion_id"])})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def derma_run(data_dir: Path, derma_csv: Path, module_tmp: Path):
    from medclass import load_config, run_experiment

    config = load_config(
        None,
        [f"output_dir={module_tmp / 'runs'}", "trainer.max_epochs=1", "trainer.progress_bar=false",
         "model.name=resnet18", "model.pretrained=false", "evaluation.bootstrap=200", "evaluation.worst_images=0",
         "gate.fit=false"],
        experiment="derma-subgroups",
        data={"source": "csv", "csv": str(derma_csv), "image_dir": str(data_dir / "dermamnist_jpeg28" / "images"),
              "image_suffix": ".jpg", "group_column": "lesion_id", "input_size": 28, "batch_size": 64},
        evaluation={"subgroups": ["sex", {"column": "age", "name": "age band", "bins": [30, 60]}, "site"],
                    "positive_class": "other"},
    )  # fmt: skip
    return run_experiment(config)


def _by_hand(truth: np.ndarray, p_other: np.ndarray) -> dict[str, float | None]:
    """The numbers for one subgroup from scratch: scikit-learn on the predictions (positive class: other)."""
    predicted = (p_other > 0.5).astype(int)
    both = len(set(truth)) == 2
    return {
        "acc": accuracy_score(truth, predicted),
        "auc": roc_auc_score(truth, p_other) if both else None,
        "f1_macro": f1_score(truth, predicted, average="macro", labels=[0, 1], zero_division=0),
        "balanced_acc": balanced_accuracy_score(truth, predicted) if both else None,
        "sensitivity": recall_score(truth, predicted, pos_label=1, zero_division=0) if truth.any() else None,
        "specificity": recall_score(truth, predicted, pos_label=0, zero_division=0) if (truth == 0).any() else None,
    }


def test_subgroup_numbers_equal_those_computed_by_hand(derma_csv: Path, derma_run) -> None:
    run_dir = derma_run.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "predictions_test.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    with open(derma_csv, newline="") as handle:
        meta = {row["image_id"]: row for row in csv.DictReader(handle)}
    image_id = [Path(p["source"]).stem for p in predictions]
    truth = np.array([p["true"] == "other" for p in predictions], dtype=int)
    p_other = np.array([float(p["p:other"]) for p in predictions])
    ages = [meta[i]["age"] for i in image_id]
    expected_values = {
        "sex": [meta[i]["sex"] for i in image_id],
        "age band": [
            "(missing)" if not a else "<30" if int(a) < 30 else "30-60" if int(a) < 60 else ">=60" for a in ages
        ],  # fmt: skip
        "site": [meta[i]["site"] for i in image_id],
    }
    entries = {entry["name"]: entry for entry in metrics["subgroups"]}
    assert list(entries) == ["sex", "age band", "site"]
    for name, values in expected_values.items():
        values = np.array(values)
        groups = {g["value"]: g for g in entries[name]["subgroups"]}
        assert set(groups) == set(values)  # no subgroup dropped, none invented
        for value, group in groups.items():
            rows = values == value
            assert group["n"] == rows.sum()
            assert group["small"] == (rows.sum() < 30)
            hand = _by_hand(truth[rows], p_other[rows])
            for metric in ("acc", "auc", "f1_macro", "balanced_acc"):
                if hand[metric] is None:
                    assert group["metrics"][metric] is None or metric == "balanced_acc"
                else:
                    assert group["metrics"][metric] == pytest.approx(hand[metric], abs=1e-6), (name, value, metric)
            other = next(row for row in group["per_class"] if row["class"] == "other")
            for column in ("sensitivity", "specificity"):
                assert other[column] == pytest.approx(hand[column], abs=1e-9) if hand[column] is not None else True
            if rows.sum() >= 30 and group["metrics"]["auc"] is not None:
                low, high = group["intervals"]["auc"]
                assert low <= group["metrics"]["auc"] <= high
    # the age band's subgroups come in their numeric order, images without an age last
    assert [g["value"] for g in entries["age band"]["subgroups"]] == ["<30", "30-60", ">=60", "(missing)"]
    assert "tiny" in {g["value"] for g in entries["site"]["subgroups"]}  # a small site is reported, not dropped


def test_largest_gap_is_the_largest_difference_between_subgroups(derma_run) -> None:
    metrics = json.loads((derma_run.run_dir / "metrics.json").read_text())
    for entry in metrics["subgroups"]:
        named = [g for g in entry["subgroups"] if g["value"] != "(missing)"]
        largest = entry["largest_gap"]
        accs = [g["metrics"]["acc"] for g in named]
        assert entry["gaps"]["acc"]["gap"] == pytest.approx(max(accs) - min(accs))
        assert largest["gap"] == max(gap["gap"] for gap in entry["gaps"].values())
        assert largest["highest"]["value"] - largest["lowest"]["value"] == pytest.approx(largest["gap"])


def test_report_has_the_subgroup_tables_and_forest_plot(derma_run) -> None:
    report = derma_run.run_dir / "report"
    html = (report / "report.html").read_text()
    summary = (report / "summary.md").read_text()
    for text in (html, summary):
        assert "Results by subgroup" in text and "the largest gap is in" in text
    assert "tiny" in html and "small" in html
    from PIL import Image

    with Image.open(report / "subgroups.png") as image:
        assert image.height > 400  # three panels


def test_identifying_and_unknown_attributes_are_refused(derma_run) -> None:
    from medclass.config import load_config
    from medclass.evaluation import evaluate_run

    for column in ("PatientID", "PatientName", "StudyDate", "StudyInstanceUID"):
        with pytest.raises(ConfigError, match="identifies a person, a date or an examination"):
            load_config(None, [], experiment="x", data={"flag": "breastmnist"}, evaluation={"subgroups": [column]})
    with pytest.raises(ConfigError, match="same name"):
        load_config(None, [], experiment="x", data={"flag": "breastmnist"},
                    evaluation={"subgroups": ["sex", {"column": "age", "name": "sex"}]})  # fmt: skip
    with pytest.raises(Exception, match="'hospital' is neither a column of the label CSV"):
        evaluate_run(derma_run.run_dir, overrides={"subgroups": ["hospital"], "report": False, "bootstrap": 0})
    with pytest.raises(Exception, match="lesion_id.*distinct values.*not a subgroup"):
        evaluate_run(derma_run.run_dir, overrides={"subgroups": ["lesion_id"], "report": False, "bootstrap": 0})


def test_medmnist_runs_say_subgroups_need_files(breast_run) -> None:
    from medclass.errors import UserError
    from medclass.evaluation import evaluate_run

    with pytest.raises(UserError, match="the medmnist source has neither"):
        evaluate_run(breast_run.run_dir, overrides={"subgroups": ["sex"], "report": False, "bootstrap": 0})


def test_comparison_names_each_runs_weakest_subgroup(derma_run) -> None:
    from medclass.evaluation import compare_runs

    folder = derma_run.run_dir.parent
    comparison = compare_runs(folder, "auc", settings={"report": False, "bootstrap": 0})
    metrics = json.loads((derma_run.run_dir / "metrics.json").read_text())
    gaps = [entry["gaps"]["auc"] for entry in metrics["subgroups"] if "auc" in entry["gaps"]]
    largest = max(gaps, key=lambda gap: gap["gap"])
    markdown = comparison.files["markdown"].read_text()
    assert "largest subgroup gap" in markdown and f"{largest['gap']:.4f}" in markdown
    assert f"={largest['lowest']['subgroup']} {largest['lowest']['value']:.4f}" in markdown
    with open(comparison.files["csv"], newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["auc_subgroup_gap"]) == pytest.approx(largest["gap"], abs=1e-4)


def test_evaluate_subgroup_option(derma_run) -> None:
    """`medclass evaluate RUN --subgroup ...` gives the subgroups of a finished run; bad values are one-line errors."""
    run = str(derma_run.run_dir)
    result = medclass(
        "evaluate", run, "--subgroup", "sex", "--subgroup", "age:30,60", "--no-report", "--bootstrap", "0"
    )
    assert result.returncode == 0, result.stderr
    assert "subgroups by sex: the largest gap is in" in result.stdout
    assert "subgroups by age band:" in result.stdout and "30-60" in result.stdout
    assert_one_line_error(medclass("evaluate", run, "--subgroup", "age:x"), "--subgroup 'age:x'", "numbers")
    assert_one_line_error(medclass("evaluate", run, "--subgroup", "PatientBirthDate"), "identifies a person")
    assert_one_line_error(medclass("evaluate", run, "--subgroup", "age:60,30"), "increasing edges")
