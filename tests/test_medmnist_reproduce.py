"""benchmarks/medmnist_reproduce.py: the paper's recipe and medclass's recipe on BreastMNIST for one epoch each,
the table it writes, and a set whose data is missing."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("medmnist_reproduce")


def table_rows(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("| BreastMNIST")]  # fmt: skip


def test_capped_paper_schedule_keeps_its_milestones(bench) -> None:
    stages = [{"name": "a", "epochs": 50}, {"name": "b", "epochs": 25}, {"name": "c", "epochs": 25}]
    assert [s["epochs"] for s in bench.scaled_stages(stages, 100)] == [50, 25, 25]
    assert [s["epochs"] for s in bench.scaled_stages(stages, 30)] == [15, 7, 8]  # drops after epochs 15 and 22
    assert [s["epochs"] for s in bench.scaled_stages(stages, 3)] == [1, 1, 1]
    assert [s["name"] for s in bench.scaled_stages(stages, 1)] == ["a"]  # one epoch: at the starting rate
    assert bench.parse_sets("blood,Derma") == ["bloodmnist", "dermamnist"]
    assert bench.parse_caps("blood=30,dermamnist=5") == {"bloodmnist": 30, "dermamnist": 5}


@pytest.mark.slow
def test_breastmnist_both_recipes_one_epoch(bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, runs = tmp_path / "table", tmp_path / "runs"
    rows = bench.main(["--sets", "breastmnist", "--max-epochs", "1", "--out", str(out), "--runs", str(runs)])
    assert [(r["set"], r["recipe"]) for r in rows] == [("breastmnist", "paper"), ("breastmnist", "medclass")]

    text = (out / "medmnist_reproduce.md").read_text()
    table = table_rows(text)
    assert [row[1].split()[0] for row in table] == ["paper", "medclass"]
    for row in table:
        assert row[2] == "1 (cap 1, recipe 100)" if row[1].startswith("paper") else "1 (cap 1, recipe 30)"
        assert 0.0 < float(row[4]) <= 1.0 and 0.0 < float(row[5]) <= 1.0  # test AUC, ACC
        assert row[6] == ".901 / .863" and row[7] == ".919 / .863"  # paper ResNet-18 (28), best of the paper
        assert re.fullmatch(r"(yes|no|tie) / (yes|no|tie)", row[8])
    assert re.search(r"^Machine: .+ cores .+torch \d", text, re.MULTILINE)
    assert "**Epochs capped**" in text and "breastmnist/paper 1 of 100" in text
    assert "Scientific Data" in text
    assert "medclass train -c configs/breastmnist.yaml trainer.max_epochs=1" in text  # each row's own command
    for row in rows:
        assert (Path(row["run_dir"]) / "metrics.json").is_file()
    with (out / "medmnist_reproduce.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2

    # A set whose data is missing: one line, nothing raised, and the rows already in the table stay.
    monkeypatch.setenv("MEDCLASS_DATA", str(tmp_path / "no-data"))
    assert len(bench.main(["--sets", "retina", "--recipes", "paper", "--out", str(out), "--runs", str(runs)])) == 2
    text = (out / "medmnist_reproduce.md").read_text()
    assert len(table_rows(text)) == 2
    assert re.search(r"^- retinamnist/paper: .*retinamnist\.npz not found", text, re.MULTILINE)
