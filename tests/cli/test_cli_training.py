"""Training commands as users run them: kill and resume, DDP on CPU, the model benchmark, the guided mode."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from cli_runner import assert_one_line_error, medclass
from test_cli import REPO

TWO_STAGE = {
    "experiment": "resume",
    "data": {"source": "medmnist", "flag": "breastmnist", "batch_size": 64},
    "model": {"name": "resnet18", "head": {"type": "mlp", "hidden": 64}},
    "stages": [
        {"name": "head", "epochs": 2, "train": "head", "lr": 0.001, "scheduler": "constant", "warmup_epochs": 0},
        {"name": "finetune", "epochs": 5, "lr": 0.0005, "backbone_lr": 0.0001, "early_stopping_patience": 9},
    ],
    "trainer": {"progress_bar": False, "limit_train_batches": 5},
    # what is tested is the training loop's stops and resumes: a light evaluation and no gate
    "evaluation": {"bootstrap": 100, "report": False},
    "gate": {"fit": False},
}


def epoch_log(run: Path) -> list[dict[str, str]]:
    with (run / "epochs.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_kill_term_and_interrupt_then_resume(tmp_path: Path) -> None:
    config = tmp_path / "two_stage.yaml"
    config.write_text(yaml.safe_dump(TWO_STAGE))
    straight = medclass("train", "-c", str(config), f"output_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr
    (reference,) = (tmp_path / "straight" / "resume").iterdir()
    # Output to a pipe (a log file, CI): one plain line per epoch, numbered from 1 as in epochs.csv
    lines = [line for line in straight.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == [
        f"epoch {k}/7 ({'head' if k <= 2 else 'finetune'})" for k in range(1, 8)
    ], straight.stderr
    assert all("training loss" in line and "validation loss" in line and line.endswith(" s") for line in lines)
    assert "Epoch 0" not in straight.stdout + straight.stderr
    rates = epoch_log(reference)
    assert [row["lr_backbone"] for row in rates[:2]] == ["0", "0"], "the backbone is frozen in the head stage"
    assert all(float(row["lr_backbone"]) > 0 for row in rates[2:])

    script = Path(sys.executable).with_name("medclass")
    process = subprocess.Popen([str(script), "train", "-c", str(config), f"output_dir={tmp_path / 'killed'}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())  # fmt: skip
    deadline = time.time() + 300
    run = None
    while time.time() < deadline:
        runs = list((tmp_path / "killed" / "resume").glob("*")) if (tmp_path / "killed" / "resume").is_dir() else []
        if runs and (runs[0] / "epochs.csv").is_file() and len(epoch_log(runs[0])) >= 3:
            run = runs[0]
            break
        time.sleep(0.1)
    assert run is not None, "the run never reached stage 2"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    assert epoch_log(run)[-1]["stage"] == "finetune", "killed during stage 2"

    # Resume, and stop that with SIGTERM (a scheduler), then Ctrl-C (SIGINT): each a clean stop at a safe point;
    # then Ctrl-C while last.ckpt is being written, once (the write completes) and twice (the write is cut: the
    # previous last.ckpt stays whole).
    for signum, code, when in ((signal.SIGTERM, 143, "epoch"), (signal.SIGINT, 130, "epoch"),
                               (signal.SIGINT, 130, "write"), (signal.SIGINT, 130, "write twice")):  # fmt: skip
        done = len(epoch_log(run))
        before = json.loads((run / "run.json").read_text())
        process = subprocess.Popen([str(script), "train", "--resume", str(run)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=os.environ.copy())  # fmt: skip
        if when == "epoch":
            deadline = time.time() + 300
            while time.time() < deadline and len(epoch_log(run)) <= done and process.poll() is None:
                time.sleep(0.1)
            process.send_signal(signum)
        else:
            assert wait_for_checkpoint_write(run, process), "no write of last.ckpt was seen"
            process.send_signal(signum)
            if when == "write twice":
                time.sleep(0.005)
                process.send_signal(signum)
        stopped_at = time.time()
        _, stderr = process.communicate(timeout=120)
        assert time.time() - stopped_at < 60, "stops within seconds (the batch in progress finishes)"
        assert process.returncode == code, stderr
        assert "Traceback" not in stderr and f"stopped by {signum.name}" in stderr, stderr
        assert f"medclass train --resume {run}" in " ".join(stderr.split()), stderr
        status = json.loads((run / "run.json").read_text())
        assert status["status"] == "interrupted" and status["signal"] == signum.name, status
        assert len(status["resumed"]) == len(before.get("resumed", [])) + 1
        assert (run / "checkpoints" / "last.ckpt").is_file() and not list(run.rglob("*.tmp"))
        saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] + 1
        assert status["epochs_done"] == saved, "run.json tells the epoch the checkpoint holds"
        if when == "write":
            assert saved == len(epoch_log(run)), "the write in progress was completed"
        if when == "write twice":  # writes take 50-750 ms here; the second Ctrl-C comes 5 ms after the first
            assert saved == len(epoch_log(run)) - 1, "the write was cut and the previous last.ckpt kept"

    # A resume that is refused (a damaged checkpoint) changes nothing on disk
    last = run / "checkpoints" / "last.ckpt"
    kept = last.read_bytes()
    last.write_bytes(kept[: len(kept) // 2])
    files_before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refused = medclass("train", "--resume", str(run))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files_before
    last.write_bytes(kept)

    # SIGTERM after the last epoch, while the best checkpoint is evaluated: the trained model is kept, run.json
    # says where the run stopped, the console names the command that finishes it, and that command trains nothing.
    process = subprocess.Popen([str(script), "train", "--resume", str(run)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=os.environ.copy())  # fmt: skip
    seen = []
    for line in process.stderr:  # the console says when the evaluation starts: the signal comes then
        seen.append(line)
        if line.startswith("evaluating the best checkpoint on the test split (156 images)"):
            break
    process.send_signal(signal.SIGTERM)
    stderr = "".join(seen) + process.communicate(timeout=120)[1]
    said = " ".join(stderr.split())
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "error:" not in stderr, "a stop that was asked for is not an error"
    assert "stopped by SIGTERM during the test evaluation, after training" in said, stderr
    assert f"finish the run with `medclass train --resume {run}`" in said, stderr
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted" and status["interrupted_in"] == "test evaluation", status
    assert (run / "checkpoints" / "best.ckpt").is_file()

    resumed = medclass("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "Checkpoint directory" not in resumed.stderr + resumed.stdout, "Lightning's warning on a resume is noise"
    assert not [line for line in resumed.stderr.splitlines() if line.startswith("epoch ")], "it trains nothing"
    assert epoch_log(run) == epoch_log(reference), "every epoch exactly once: same stages, rates and metrics"
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["epochs"] == 7 and len(status["resumed"]) == 5
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics == json.loads((reference / "metrics.json").read_text())["metrics"]
    assert_one_line_error(medclass("train", "--resume", str(run)), "finished already")


def wait_for_checkpoint_write(run: Path, process: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll until last.ckpt's temporary file exists (the write in progress; ~100 MB for this model)."""
    folder = run / "checkpoints"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        with os.scandir(folder) as entries:
            if any(e.name.startswith(".last.ckpt.") and e.name.endswith(".tmp") for e in entries):
                return True
        time.sleep(0.002)
    return False


def test_resume_errors(tmp_path: Path) -> None:
    assert_one_line_error(medclass("train", "--resume", str(tmp_path)), "no config.yaml")
    assert_one_line_error(medclass("train"), "give an experiment config")


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    result = medclass(
        "train", "-c", str(REPO / "configs" / "breastmnist.yaml"), f"output_dir={tmp_path}", "trainer.max_epochs=2",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.progress_bar=false",
        "data.input_size=null",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = list((tmp_path / "breastmnist").iterdir())
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert len(epoch_log(run)) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_samples"] == 156 and 0 <= metrics["metrics"]["auc"] <= 1
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_benchmark_leaderboard_with_a_failing_model(tmp_path: Path) -> None:
    config = {
        "experiment": "bench",
        "data": {"source": "medmnist", "flag": "breastmnist", "batch_size": 64},
        "trainer": {"max_epochs": 1, "progress_bar": False},
        "models": [
            {"name": "resnet18"},
            {"name": "test_vit", "overrides": {"model.kwargs": {"img_size": 32}, "data.input_size": 32}},
            {"name": "resnet18", "label": "broken", "overrides": {"model.weights": str(tmp_path / "missing.pth")}},
            {"name": "test_vit", "overrides": {"model.kwargs": {"img_size": 32}, "data.input_size": 32, "seed": 7}},
        ],
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    result = medclass("benchmark", "-c", str(path), f"output_dir={tmp_path / 'runs'}")
    assert result.returncode == 0, result.stderr
    (folder,) = list((tmp_path / "runs" / "bench-benchmark").iterdir())
    with (folder / "leaderboard.csv").open() as handle:
        board = list(csv.DictReader(handle))
    assert sorted(r["status"] for r in board) == ["failed", "ok", "ok", "ok"]
    (broken,) = [r for r in board if r["status"] == "failed"]
    assert broken["model"] == "broken" and "not found" in broken["error"]
    board = [r for r in board if r["status"] == "ok"]
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert folders == ["resnet18", "test_vit", "test_vit-2"], "the same model twice: one folder per entry"
    assert float(board[0]["auc"]) >= float(board[1]["auc"])
    assert all(float(r["parameters_M"]) > 0 and float(r["images_per_s"]) > 0 for r in board)
    assert (folder / "leaderboard.md").is_file() and (folder / "leaderboard.png").is_file()
    assert "broken" in result.stdout

    config["models"] = config["models"][2:3]  # only the broken entry
    path.write_text(yaml.safe_dump(config))
    failed = medclass("benchmark", "-c", str(path), f"output_dir={tmp_path / 'runs2'}")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("error: no model of the benchmark trained (1 failed)")


def test_guided_mode_validates_answers_and_prints_the_command(tmp_path: Path, data_dir: Path) -> None:
    answers = f"{data_dir / 'brain_mri_4class'}\nresnt18\nresnet18\n0\n16\n1\nn\n"
    result = subprocess.run([str(Path(sys.executable).with_name("medclass")), "train", "--interactive"], input=answers,
                            capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "did you mean resnet18" in result.stdout and "choose a number from 1" in result.stdout
    assert "medclass train experiment=brain_mri_4class data.source=folder" in result.stdout
    assert "model.name=resnet18 data.batch_size=16 data.num_workers=1" in result.stdout


def test_guided_mode_trains_after_confirmation(tmp_path: Path) -> None:
    answers = "resnet18\n64\n0\ny\n"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("medclass")), "train", "-i", "-c", "configs/breastmnist.yaml",
         "trainer.max_epochs=1", f"output_dir={tmp_path}", "trainer.progress_bar=false"],
        input=answers, capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Equivalent command" in result.stdout and "ACC" in result.stdout
    assert len(list((tmp_path / "breastmnist").iterdir())) == 1


def test_progress_bar_in_a_terminal_counts_epochs_from_1(tmp_path: Path) -> None:
    """In a terminal (a pseudo-terminal here) the live bar says "Epoch 1/2", as epochs.csv and the report do."""
    import pty

    primary, secondary = pty.openpty()
    script = Path(sys.executable).with_name("medclass")
    process = subprocess.Popen(
        [str(script), "train", "-c", str(REPO / "configs" / "breastmnist.yaml"), f"output_dir={tmp_path}",
         "trainer.max_epochs=2", "trainer.limit_train_batches=2", "evaluation.bootstrap=0", "evaluation.report=false"],
        stdin=secondary, stdout=secondary, stderr=secondary, env={**os.environ, "COLUMNS": "120"}, close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process has ended
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0, output.decode(errors="replace")[-2000:]
    text = output.decode(errors="replace")
    assert "Epoch 1/2" in text and "Epoch 2/2" in text, text[-2000:]
    assert "Epoch 0/" not in text
