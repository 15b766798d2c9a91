"""A loss that turns NaN stops training with a clear message, keeps the last good checkpoint, and the run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from cli_runner import medclass

import medclass.training.fit as fit
from medclass.config import load_config
from medclass.errors import TrainingDiverged
from medclass.experiments import resume_experiment
from medclass.training.network import read_checkpoint


class PoisonWeights(L.Callback):
    """Fault injection: one weight becomes NaN in the second epoch, as after an overflow or a bad GPU."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 2:
            with torch.no_grad():
                next(pl_module.net.parameters()).view(-1)[0] = float("nan")


def test_nan_loss_stops_keeps_last_good_checkpoint_and_resumes(tmp_path: Path, monkeypatch) -> None:
    real_build = fit.build_trainer

    def build_with_fault(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        trainer.callbacks.append(PoisonWeights())
        return trainer

    monkeypatch.setattr(fit, "build_trainer", build_with_fault)
    config = load_config(
        None,
        [f"output_dir={tmp_path}", "trainer.max_epochs=3", "trainer.limit_train_batches=4", "data.batch_size=32",
         "trainer.progress_bar=false", "evaluation.report=false", "evaluation.bootstrap=0"],
        experiment="nan", data={"source": "medmnist", "flag": "breastmnist"},
    )  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 7; the last good checkpoint is .*last"):
        fit.train(config)
    (run,) = (tmp_path / "nan").iterdir()
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "training diverged" in status["error"]
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0, "the checkpoint of the last finished epoch, not the poisoned one"
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert len((run / "epochs.csv").read_text().splitlines()) == 2, "header + the one good epoch"

    monkeypatch.setattr(fit, "build_trainer", real_build)  # the fault is gone: the run resumes and finishes
    result = resume_experiment(run)
    assert json.loads((run / "run.json").read_text())["status"] == "finished" and result.best_epoch is not None


def test_diverging_cli_run_is_one_clear_line(tmp_path: Path) -> None:
    config = Path(__file__).parents[2] / "configs" / "breastmnist.yaml"
    result = medclass("train", "-c", str(config), f"output_dir={tmp_path}", "trainer.max_epochs=1",
                      "data.mean=[0.5]", "data.std=[1e-40]")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, "one error line (after the run's progress log)"
    assert "training diverged: the loss is nan at epoch 1, step 1" in error[0] and "no checkpoint" in error[0]
    assert "check data.mean/std" in error[0]
