"""benchmarks/medmnist_goal.py: one attempt (a two-member ensemble, one seed, one short epoch) on BreastMNIST,
its rows and the count of paper figures it beats."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import REPO_ROOT, load_benchmark


@pytest.mark.slow
def test_an_ensemble_attempt_is_recorded_and_counted(tmp_path: Path, capsys) -> None:
    goal = load_benchmark("medmnist_goal")
    quick = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "evaluation.bootstrap=0",
             "evaluation.report=false"]  # fmt: skip
    args = ["--set", "breastmnist", "--config", str(REPO_ROOT / "configs" / "breastmnist.yaml"), "--members", "2",
            "--seeds", "1", "--ship", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]  # fmt: skip
    assert goal.main([*args, *quick]) == 0
    with open(tmp_path / "out" / "medmnist_goal.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["members"] == "2" and rows[0]["shipped"] == "yes"
    assert 0 < float(rows[0]["train_min"]) < 5 and 0 <= float(rows[0]["test_auc"]) <= 1
    assert 0 <= float(rows[0]["val_auc"]) <= 1 and 0 <= float(rows[0]["val_acc"]) <= 1
    table = (tmp_path / "out" / "medmnist_goal.md").read_text()
    beats = [line for line in table.splitlines() if line.startswith("| breastmnist")][0]
    wins = beats.split("|")[-3].strip().split(" / ").count("yes")
    assert f"beats best of paper: {wins} of 8" in table and "beats best of paper" in capsys.readouterr().out
    assert table.rstrip().endswith(f"beats best of paper: {wins} of 8")
    gap = [line for line in table.splitlines() if line.startswith("- breastmnist (breastmnist x2): AUC ")][0]
    assert gap.count("short by") + gap.count("beaten by") + gap.count("equal at") == 2
    with pytest.raises(SystemExit):
        goal.main(["--set", "bloodmnist", *args[2:], *quick])  # the config trains on BreastMNIST
    tuned = ["--set", "breastmnist", "--config", str(REPO_ROOT / "configs" / "tuned" / "breastmnist.yaml"),
             "--out", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit):  # another recipe may not take this attempt's name: it would replace its rows
        goal.main([*tuned, "--name", "breastmnist x2", *quick])
    with pytest.raises(SystemExit):  # nothing to mark
        goal.main([*tuned, "--ship-only"])
    assert goal.main([*args[:4], "--members", "2", "--ship-only", "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "medmnist_goal.csv", newline="") as handle:
        assert [r["shipped"] for r in csv.DictReader(handle)] == ["yes"]


@pytest.mark.slow
def test_an_attempt_on_a_file_source(tmp_path: Path) -> None:
    """DermaMNIST's recipe reads the JPEG copy (a CSV source, which has no download switch): one seed of its tuned
    config, named after the config's path."""
    goal = load_benchmark("medmnist_goal")
    args = ["--set", "dermamnist", "--config", str(REPO_ROOT / "configs" / "tuned" / "dermamnist_jpeg.yaml"),
            "--seeds", "1", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "evaluation.bootstrap=0", "evaluation.report=false"]  # fmt: skip
    assert goal.main(args) == 0
    with open(tmp_path / "out" / "medmnist_goal.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["set"], r["attempt"], r["members"]) for r in rows] == [("dermamnist", "tuned/dermamnist_jpeg", "1")]
    assert 0 <= float(rows[0]["test_acc"]) <= 1
