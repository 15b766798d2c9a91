"""The same config and seed give the same model, byte for byte on a CPU: whatever the preprocessing cache held,
however many loader workers there were, from the command line or the Python API, in a fresh process or after
another run in the same one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_runner import medclass

from medclass import load_config, run_experiment

REPO = Path(__file__).resolve().parents[2]
# 72 px keeps training on the per-image DataLoader path, where loader workers take part (<= 64 px on a CPU forms
# batches in memory); two batches of one epoch are enough to tell two models apart.
OVERRIDES = ["data.input_size=72", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
             "trainer.progress_bar=false", "evaluation.bootstrap=200", "evaluation.report=false",
             "gate.fit=false"]  # fmt: skip


def outputs(run_dir: Path) -> tuple[bytes, bytes]:
    return (run_dir / "epochs.csv").read_bytes(), (run_dir / "metrics.json").read_bytes()


def only_run(folder: Path) -> Path:
    (run,) = sorted((folder / "brain_mri").iterdir())
    return run


@pytest.mark.slow
def test_same_config_and_seed_give_identical_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """A binary task (glioma vs no tumour, real MRI images), so the positive-class intervals are checked too."""
    root = tmp_path / "mri"
    for name in ("glioma", "notumor"):
        shutil.copytree(data_dir / "brain_mri_4class" / name, root / name)
    monkeypatch.setenv("MEDCLASS_CACHE", str(tmp_path / "cold-cache"))  # nothing decoded yet
    config = tmp_path / "mri.yaml"
    config.write_text((REPO / "configs" / "brain_mri.yaml").read_text().replace("${MEDCLASS_DATA}/brain_mri_4class",
                                                                                 str(root)))  # fmt: skip
    config = str(config)
    cli = medclass("train", "-c", config, *OVERRIDES, f"output_dir={tmp_path / 'cli'}")
    assert cli.returncode == 0, cli.stderr
    assert list((tmp_path / "cold-cache").glob("images-*.npy")), "the first run built the cache"
    reference = outputs(only_run(tmp_path / "cli"))

    # The Python API in this (long-lived) process: a warm cache, then loader workers.
    for name, extra in (("warm", ["data.num_workers=0"]), ("workers", ["data.num_workers=2"])):
        result = run_experiment(load_config(config, [*OVERRIDES, *extra, f"output_dir={tmp_path / name}"]))
        assert outputs(result.run_dir) == reference, name
    metrics = json.loads(reference[1])
    assert metrics["positive_class"]["class"] == "glioma" and metrics["positive_class"]["ci"]["auc"] is not None
    epochs = reference[0].decode()
    assert "seconds" not in epochs.splitlines()[0], "wall times go to run.json, not the seeded record"
