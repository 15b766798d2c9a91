"""benchmarks/peers.py: medclass and fastai trained one epoch each on BreastMNIST in processes of their own, the
table and ratio lines it writes, a peer that is not there reported as skipped, and fastai's loaders never seeing a
test image."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("peers")


@pytest.mark.unit
def test_ratio_lines_are_ratios_of_the_means(bench) -> None:
    runs = [
        bench.Run("s", "medclass", 1, 2, test_auc=0.90, test_acc=0.80, cpu_s=100.0, wall_s=1.0),
        bench.Run("s", "medclass", 2, 2, test_auc=0.80, test_acc=0.80, cpu_s=300.0, wall_s=1.0),
        bench.Run("s", "fastai", 1, 2, test_auc=0.85, test_acc=0.50, cpu_s=400.0, wall_s=1.0),
        bench.Run("s", "fastai", 2, 2, status="failed: out of memory"),
        bench.Run("s", "medmnist-authors", 1, 2, status="skipped: no --medmnist-experiments checkout given"),
        bench.Run("t", "medclass", 1, 15, test_auc=0.99, test_acc=0.90, cpu_s=700.0, wall_s=1.0),
        bench.Run("t", "medmnist-authors", 1, 1, test_auc=0.90, test_acc=0.75, cpu_s=500.0, wall_s=1.0),
    ]
    table, lines = bench.summarise(runs)
    assert lines == [
        "peers s: medclass/fastai AUC 1.00, ACC 1.60, CPU 0.50",
        "peers s: medclass/medmnist-authors not measured (skipped: no --medmnist-experiments checkout given)",
        "peers t: medclass/medmnist-authors AUC 1.10, ACC 1.20, CPU 1.40, epochs 15/1",  # a CPU-time budget
    ]
    rows = {row["tool"]: row for row in table if row["set"] == "s"}
    assert rows["medclass"]["auc"] == "0.850 +- 0.071" and rows["medclass"]["runs"] == "2/2"
    assert rows["fastai"]["runs"] == "1/2" and rows["fastai"]["note"] == "failed: out of memory"
    with pytest.raises(Exception, match="unknown set"):
        bench.parse_list("breastmnist,pathmnist", list(bench.SETS), "set")


@pytest.mark.unit
def test_a_new_invocation_replaces_only_its_own_rows(bench, tmp_path: Path) -> None:
    def run(set_name, tool, seed, auc, command):
        return bench.Run(set_name, tool, seed, 1, test_auc=auc, test_acc=0.5, cpu_s=10.0, wall_s=5.0, threads=2,
                         date="2026-12-05", command=command, machine="m", versions="v")  # fmt: skip

    first = [run("chest_xray", "medclass", 1, 0.9, "a"), run("breastmnist", "fastai", 1, 0.7, "a"),
             run("breastmnist", "medclass", 1, 0.8, "a")]  # fmt: skip
    bench.write_results(tmp_path, first)
    text = bench.write_results(tmp_path, [run("breastmnist", "medclass", 1, 0.6, "b")])
    with (tmp_path / "peers.csv").open() as handle:
        rows = [(r["set"], r["tool"], r["seed"], r["test_auc"], r["command"]) for r in csv.DictReader(handle)]
    assert rows == [("breastmnist", "medclass", "1", "0.6", "b"), ("breastmnist", "fastai", "1", "0.7", "a"),
                    ("chest_xray", "medclass", "1", "0.9", "a")]  # fmt: skip
    assert "peers breastmnist: medclass/fastai AUC 0.86, ACC 1.00, CPU 1.00" in text
    assert "- 2026-12-05: `b`" in text and "- 2026-12-05: `a`" in text
    bench.write_results(tmp_path, [run("retinamnist", "fastai", 2, 0.5, "c")], fresh=True)
    assert len((tmp_path / "peers.csv").read_text().splitlines()) == 2


def test_fastai_folder_loaders_leave_the_test_folder_out(bench, tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("fastai")
    dls, root = bench.fastai_loaders(bench.SETS["chest_xray"], 1, tmp_path / "work")
    seen = {Path(p) for p in (*dls.train_ds.items, *dls.valid_ds.items)}
    assert len(seen) == sum(1 for p in (root / "train").rglob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    assert all((root / "train") in p.parents for p in seen)
    assert list(dls.vocab) == ["NORMAL", "PNEUMONIA"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_breastmnist_one_epoch_against_fastai(bench, tmp_path: Path) -> None:
    pytest.importorskip("fastai")
    out = tmp_path / "out"
    argv = ["--sets", "breastmnist", "--seeds", "1", "--epochs", "1", "--out", str(out), "--work", str(tmp_path)]
    runs = bench.main(argv)
    status = {r.tool: r.status for r in runs}
    assert status == {"medclass": "ok", "fastai": "ok",
                      "medmnist-authors": "skipped: no --medmnist-experiments checkout given"}  # fmt: skip
    for run in runs[:2]:
        assert 0.0 < run.test_auc <= 1.0 and 0.0 < run.test_acc <= 1.0
        assert 0 < run.cpu_s and 0 < run.wall_s and run.threads >= 1
    fastai = next(r for r in runs if r.tool == "fastai")
    assert fastai.details == {"train": 546, "valid": 78, "test": 156}  # BreastMNIST's official split, as given
    text = (out / "peers.md").read_text()
    assert re.search(r"^peers breastmnist: medclass/fastai AUC \d+\.\d\d, ACC \d+\.\d\d, CPU \d+\.\d\d$", text, re.M)
    assert "peers breastmnist: medclass/medmnist-authors not measured (skipped: no --medmnist-experiments" in text
    assert re.search(r"^- .+ cores .+; 1 run\(s\) at a time with \d+ thread\(s\) each; medclass commit", text, re.M)
    assert "fastai 2." in text
    with (out / "peers.csv").open() as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == [r.status for r in runs]
