"""The run directory's contract: RunDir names every file, the README's table is RunDir's own, format versions are
checked on read (run directory, checkpoint, package) with a message naming the version."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from medclass.environment import git_commit
from medclass.errors import RunDirError, UserError
from medclass.run_dir import LAYOUT, RUN_FORMAT_VERSION, SERIES_LAYOUT, RunDir, layout_markdown

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = re.compile(
    r"^(run\.json|config\.yaml|data\.json|preprocessing\.json|environment\.json|epochs\.csv|splits\.csv|skipped\.csv|"
    r"metrics(_\w+)?\.json|calibration(_\w+)?\.json|predictions_\w+\.csv|checkpoints|\w+\.ckpt)$"
)


@pytest.mark.unit
def test_readme_table_is_run_dirs_own() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert layout_markdown() in readme, "README's run directory table: paste medclass.run_dir.layout_markdown()"
    assert layout_markdown(SERIES_LAYOUT) in readme, "README's series table: layout_markdown(SERIES_LAYOUT)"


@pytest.mark.unit
def test_only_run_dir_spells_a_run_files_name() -> None:
    """No string literal outside run_dir.py is the name of a run file (a message may mention one in a sentence;
    folder names that are also ordinary words, report/ and model/, are left to review)."""
    offenders = []
    for path in (ROOT / "src" / "medclass").rglob("*.py"):
        if path.name == "run_dir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and RUN_FILES.match(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.unit
def test_layout_names_what_run_dir_writes() -> None:
    run = RunDir("/r")
    named = " ".join(entry for entry, _ in LAYOUT)
    paths = [run.status_path, run.config_path, run.data_path, run.preprocessing_path, run.environment_path,
             run.splits_path, run.skipped_path, run.epochs_csv, run.metrics_path(), run.calibration_path(),
             run.predictions_path("test"), run.report_dir(), run.robustness_dir(), run.package_dir(),
             run.tensorboard_dir, run.wandb_dir, run.checkpoint_path("best"), run.checkpoint_path("last")]  # fmt: skip
    for path in paths:
        assert f"`{path.relative_to('/r')}" in named, path
    assert run.metrics_path("val", "last").name == "metrics_val_last.json"
    assert run.report_dir("val", "best").name == "report_val_best"
    assert run.package_dir("last").name == "model_last"


@pytest.mark.unit
def test_is_run_dir_and_find(tmp_path: Path) -> None:
    done, started, other = tmp_path / "a" / "1", tmp_path / "b" / "2", tmp_path / "c"
    for folder in (done, started, other):
        folder.mkdir(parents=True)
    for folder in (done, started):
        (folder / "config.yaml").write_text("{}\n")
    (done / "run.json").write_text("{}")
    assert RunDir.is_run_dir(done) and RunDir.is_run_dir(started) and not RunDir.is_run_dir(other)
    assert RunDir.find(tmp_path) == [done], "compare finds runs that got as far as run.json"


@pytest.mark.unit
def test_newer_run_format_is_refused_with_its_version(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.update_status(status="finished")
    assert json.loads(run.status_path.read_text())["format_version"] == RUN_FORMAT_VERSION
    run.check_format()
    run.update_status(format_version=RUN_FORMAT_VERSION + 1)
    with pytest.raises(RunDirError, match=rf"run format version {RUN_FORMAT_VERSION + 1}.*upgrade medclass"):
        run.check_format()


def test_newer_checkpoint_and_package_formats_are_refused(breast_run, tmp_path: Path) -> None:
    from medclass.inference.package import PACKAGE_FORMAT_VERSION, load_package, package_from_run
    from medclass.training.network import CHECKPOINT_FORMAT_VERSION, read_checkpoint

    run = RunDir(breast_run.run_dir)
    checkpoint = read_checkpoint(run.checkpoint_path("best"))
    assert checkpoint["medclass"]["format_version"] == CHECKPOINT_FORMAT_VERSION
    checkpoint["medclass"]["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    newer = tmp_path / "newer.ckpt"
    torch.save(checkpoint, newer)
    with pytest.raises(RunDirError, match=rf"checkpoint format version {CHECKPOINT_FORMAT_VERSION + 1}.*newer"):
        read_checkpoint(newer)

    package = package_from_run(run.path, out=tmp_path / "package")
    manifest_path = package / "medclass-model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = PACKAGE_FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=rf"package format version {PACKAGE_FORMAT_VERSION + 1}"):
        load_package(package)
    shutil.rmtree(package)


def test_recording_the_git_commit_takes_no_lock_in_the_checkout(tmp_path: Path) -> None:
    """environment.json's git commit comes from `git status`, which refreshes a stale index under .git/index.lock;
    a run killed at that moment left the lock, and the user's next git command refused to run. Now git is asked
    not to write: a checkout whose file times changed keeps its index untouched, and the answer is still right."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                       capture_output=True)  # fmt: skip

    git("init", "-q")
    (tmp_path / "tracked.txt").write_text("same\n")
    git("add", "tracked.txt")
    git("commit", "-qm", "one")
    index = tmp_path / ".git" / "index"
    later = time.time() + 5
    os.utime(tmp_path / "tracked.txt", (later, later))  # same content, new time: plain `git status` rewrites the index
    before = index.stat().st_mtime_ns
    found = git_commit(tmp_path)
    assert found is not None and len(found["commit"]) == 40 and found["dirty"] is False
    assert index.stat().st_mtime_ns == before
    (tmp_path / "tracked.txt").write_text("changed\n")
    assert git_commit(tmp_path)["dirty"] is True
