"""Scoring an archive in pieces (issue 22): two shards merged equal one run, a stopped table resumes where it
stopped (a half-written line included) and ends equal to one run, and the merge refuses shards that do not belong
together, are missing or are unfinished."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_runner import assert_one_line_error, medclass
from PIL import Image

from medclass.errors import UserError
from medclass.inference.archive import PredictionTable, merge_tables, parse_shard, shard_files, state_path
from medclass.inference.predictor import collect_images, iter_predictions, load_predictor, prediction_mode


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, medmnist_dir: Path) -> Path:
    """41 real BloodMNIST test images as PNG files in two folders, and one truncated file."""
    root = tmp_path_factory.mktemp("archive")
    images = np.load(medmnist_dir / "bloodmnist.npz")["test_images"][:41]
    for i, image in enumerate(images):
        (root / f"site{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(image).save(root / f"site{i % 2}" / f"cell_{i:02d}.png")
    (root / "site1" / "cell_99.png").write_bytes((root / "site0" / "cell_00.png").read_bytes()[:100])
    return root


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_same_table(a: Path, b: Path) -> None:
    """The same files in the same order with the same answers (probabilities to 1e-5: batches differ in size)."""
    first, second = rows(a), rows(b)
    assert [r["file"] for r in first] == [r["file"] for r in second]
    assert [r["predicted"] for r in first] == [r["predicted"] for r in second]
    assert list(first[0]) == list(second[0])
    for x, y in zip(first, second, strict=True):
        for column in (c for c in x if c.startswith("p:")):
            assert float(x[column]) == pytest.approx(float(y[column]), abs=1e-5)


def test_two_shards_merged_and_a_resumed_table_equal_one_run(blood_run: Path, archive: Path, tmp_path: Path) -> None:
    one = medclass("predict", str(blood_run), str(archive), "--out", str(tmp_path / "all.csv"))
    assert one.returncode == 0, one.stderr
    assert "41 image(s) predicted, 1 skipped" in one.stdout
    for index in (1, 2):
        part = medclass("predict", str(blood_run), str(archive), "--shard", f"{index}/2", "--batch-size", "7",
                        "--workers", str(index - 1), cwd=tmp_path)  # fmt: skip
        assert part.returncode == 0, part.stderr
        assert f"(shard {index}/2: 21 of 42 files)" in part.stdout, part.stdout
    first, second = (tmp_path / f"predictions-{i}-of-2.csv" for i in (1, 2))
    assert len(rows(first)) == 21 and len(rows(second)) == 20, "the truncated file is in shard 2"
    merged = medclass("merge-predictions", str(second), str(first), "--out", str(tmp_path / "merged.csv"))
    assert merged.returncode == 0, merged.stderr
    assert "41 image(s) from 2 shard(s), 1 skipped" in merged.stdout
    assert_same_table(tmp_path / "merged.csv", tmp_path / "all.csv")
    state = json.loads(state_path(tmp_path / "merged.csv").read_text())
    assert state["complete"] and state["unreadable"][0]["file"].endswith("cell_99.png")

    # A job stopped after two batches, in the middle of writing a line: --resume scores only the rest.
    predictor = load_predictor(blood_run)
    files, _ = collect_images([str(archive)])
    settings = {"calibrated": False, "tta": False, "gate": prediction_mode(predictor, "warn", False), "top_k": 3}
    stopped = tmp_path / "stopped.csv"
    table = PredictionTable.open(stopped, predictor, settings, files, (1, 1), True, resume=False)
    batches = iter_predictions(predictor, files, batch_size=8)
    for _ in range(2):
        table.append(*next(batches))
    batches.close()
    with stopped.open("a") as handle:
        handle.write(str(files[16]) + ",monocy")  # cut mid-line by the kill
    resumed = medclass("predict", str(blood_run), str(archive), "--out", str(stopped), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "16 of 42 files done before, 26 to go" in resumed.stdout
    assert "25 image(s) predicted, 1 skipped" in resumed.stdout
    assert_same_table(stopped, tmp_path / "all.csv")
    assert json.loads(state_path(stopped).read_text())["complete"]
    again = medclass("predict", str(blood_run), str(archive), "--out", str(stopped), "--resume")
    assert again.returncode == 0 and "42 of 42 files done before, 0 to go" in again.stdout
    assert_same_table(stopped, tmp_path / "all.csv")

    # Options that differ from the table's are refused, not mixed into it
    changed = medclass("predict", str(blood_run), str(archive), "--out", str(stopped), "--resume", "--tta")
    assert_one_line_error(changed, "--resume", "tta False", "True")
    assert_one_line_error(medclass("predict", str(blood_run), str(archive), "--shard", "2/1"), "--shard '2/1'")


def test_the_merge_refuses_shards_that_do_not_belong_together(blood_run: Path, archive: Path, tmp_path: Path) -> None:
    predictor = load_predictor(blood_run)
    files, _ = collect_images([str(archive)])
    settings = {"calibrated": False, "tta": False, "gate": "warn", "top_k": 3}

    def shard(index: int, count: int, name: str, finish: bool = True, some: list[Path] | None = None) -> Path:
        table = PredictionTable.open(tmp_path / name, predictor, settings, some or files, (index, count), True, False)
        for batch in iter_predictions(predictor, shard_files(some or files, index, count), batch_size=16):
            table.append(*batch)
        if finish:
            table.finish()
        return tmp_path / name

    one, two = shard(1, 2, "one.csv"), shard(2, 2, "two.csv")
    assert merge_tables([one, two], tmp_path / "ok.csv")["scored"] == 41
    with pytest.raises(UserError, match=r"shard\(s\) 2 of 2 missing"):
        merge_tables([one], tmp_path / "m.csv")
    shutil.copy(one, tmp_path / "copy.csv")
    shutil.copy(state_path(one), state_path(tmp_path / "copy.csv"))
    with pytest.raises(UserError, match="both shard 1/2"):
        merge_tables([one, tmp_path / "copy.csv", two], tmp_path / "m.csv")
    other = shard(2, 2, "other.csv", some=files[:-3])  # the archive changed between the shards
    with pytest.raises(UserError, match="differ in file lists"):
        merge_tables([one, other], tmp_path / "m.csv")
    unfinished = shard(2, 2, "unfinished.csv", finish=False)
    with pytest.raises(UserError, match=r"unfinished.csv \(shard 2/2\) is unfinished: 21 of 21 files"):
        merge_tables([one, unfinished], tmp_path / "m.csv")
    (tmp_path / "lone.csv").write_text("file,predicted\n")
    with pytest.raises(UserError, match="no lone.csv.medclass.json beside it"):
        merge_tables([one, tmp_path / "lone.csv"], tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists(), "a refused merge writes nothing"
    assert parse_shard(" 3 / 8 ") == (3, 8)
    assert [len(shard_files(files, i, 5)) for i in range(1, 6)] == [8, 8, 9, 8, 9]
