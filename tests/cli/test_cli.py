"""The real `medclass` command in a subprocess: the end-to-end path and every bad input the foundation names."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import assert_one_line_error, medclass

REPO = Path(__file__).resolve().parents[2]
BREAST = str(REPO / "configs" / "breastmnist.yaml")


def test_version_and_help() -> None:
    assert re.match(r"medclass \d+\.\d+", medclass("--version").stdout)
    help_text = medclass("--help").stdout
    assert "train" in help_text and "evaluate" in help_text


def test_config_command_shows_overrides() -> None:
    result = medclass("config", "-c", BREAST, "trainer.max_epochs=3", "data.batch_size=16")
    assert result.returncode == 0, result.stderr
    assert "max_epochs: 3" in result.stdout and "batch_size: 16" in result.stdout


@pytest.mark.slow
def test_train_then_evaluate_prints_the_same_numbers(tmp_path: Path) -> None:
    trained = medclass(
        "train",
        "-c",
        BREAST,
        "trainer.max_epochs=1",
        f"output_dir={tmp_path}",
        "trainer.progress_bar=false",
        "trainer.limit_train_batches=3",
        "evaluation.bootstrap=200",
    )
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = list((tmp_path / "breastmnist").iterdir())
    evaluated = medclass("evaluate", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr

    def numbers(text: str) -> dict[str, str]:
        return dict(re.findall(r"│ ([A-Za-z][^│]*?)\s*│\s*([0-9.]+) │", text))

    assert {"ACC", "AUC (MedMNIST)", "F1 macro", "balanced ACC", "MCC", "ECE"} <= set(numbers(trained.stdout))
    assert numbers(trained.stdout) == numbers(evaluated.stdout)
    assert "95% CI" in evaluated.stdout and "operating threshold" in evaluated.stdout
    assert (run_dir / "report" / "report.html").is_file()
    assert_one_line_error(medclass("evaluate", str(run_dir), "--split=tset"), "split 'tset' does not exist")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_one_line_error(medclass("train", "-c", str(tmp_path / "nope.yaml")), "nope.yaml not found")


def test_unknown_field_in_override() -> None:
    assert_one_line_error(medclass("train", "-c", BREAST, "trainer.max_epoch=3"), "did you mean max_epochs?")


def test_unknown_dataset_flag_suggests() -> None:
    assert_one_line_error(medclass("train", "-c", BREAST, "data.flag=bloodmnst"), "'bloodmnst'", "bloodmnist")


def test_unknown_model_suggests() -> None:
    assert_one_line_error(medclass("train", "-c", BREAST, "model.name=resnt18"), "resnt18", "resnet18")


def test_missing_npz_offline(tmp_path: Path) -> None:
    offline = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    line = assert_one_line_error(
        medclass("train", "-c", BREAST, f"data.root={tmp_path}", env=offline), "breastmnist.npz"
    )
    assert str(tmp_path) in line


def test_corrupted_npz(tmp_path: Path, medmnist_dir: Path) -> None:
    data = (medmnist_dir / "breastmnist.npz").read_bytes()
    (tmp_path / "breastmnist.npz").write_bytes(data[:1000])
    assert_one_line_error(
        medclass("train", "-c", BREAST, f"data.root={tmp_path}"), str(tmp_path / "breastmnist.npz"), "damaged"
    )


def unfinished_run(tmp_path: Path) -> Path:
    """A run directory with its config and status but no checkpoint (training never finished an epoch)."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(BREAST, run / "config.yaml")
    (run / "run.json").write_text('{"format_version": 1, "status": "running"}')
    return run


def test_run_directory_without_checkpoint(tmp_path: Path) -> None:
    assert_one_line_error(medclass("evaluate", str(unfinished_run(tmp_path))), "no best checkpoint")


def test_run_directory_without_run_json(tmp_path: Path) -> None:
    run = unfinished_run(tmp_path)
    (run / "run.json").unlink()
    assert_one_line_error(medclass("evaluate", str(run)), "has no run.json")


def test_evaluate_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    assert_one_line_error(medclass("evaluate", str(tmp_path / "missing")), "does not exist")
    assert_one_line_error(medclass("evaluate", str(tmp_path)), "holds no run directories")


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--checkpoint=middle", "checkpoint 'middle' is not one of best, last"),
     ("--metric=sensitivty", "unknown metric 'sensitivty'"), ("--metric=acuracy", "did you mean auc, acc?")],
)  # fmt: skip
def test_bad_evaluate_options(tmp_path: Path, flag: str, message: str) -> None:
    assert_one_line_error(medclass("evaluate", str(unfinished_run(tmp_path)), flag), message)


QUICK_MISTAKES = [
    ("evaluate {run} --checkpoint middle", "checkpoint 'middle' is not one of best, last"),
    ("evaluate {run} --split tset", "split 'tset' does not exist"),
    ("evaluate {run} --metric acuracy", "did you mean auc, acc?"),
    ("evaluate {tmp}/nope", "nope does not exist"),
    ("export {tmp}/nope", "nope is not a folder"),
    ("export {run} --checkpoint middle", "checkpoint 'middle' is not one of"),
    ("gate fit {tmp}/nope", "nope is not a folder"),
    ("register {tmp}/nope --name x", "nope is not a folder"),
    ("predict {tmp}/nope.onnx a.png", "nope.onnx does not exist: give a model package"),
    ("predict {run} a.png --out scores.txt", "give a .csv or .json file name"),
    ("predict {run} a.png --shard 3/2", "--shard '3/2'"),
    ("serve {tmp}/nope", "nope does not exist: give a model package"),
    ("merge-predictions {tmp}/a.csv", "a.csv: no such file"),
    ("train -c {tmp}/nope.yaml", "nope.yaml not found"),
    ("train -c " + BREAST + " trainer.max_epoch=3", "did you mean max_epochs?"),
]


@pytest.mark.parametrize(("command", "message"), QUICK_MISTAKES)
def test_mistakes_are_answered_before_torch_is_imported(tmp_path: Path, command: str, message: str) -> None:
    """A typo or a wrong path is refused from the options alone: importing torch, timm and Lightning would make the
    user wait seconds (~7 s on a 2-core CPU) for a one-line error."""
    args = command.format(run=unfinished_run(tmp_path), tmp=tmp_path).split()
    script = (
        "import sys\nfrom medclass.cli.app import main\n"
        f"sys.argv = ['medclass', *{args!r}]\n"
        "try:\n    main()\nfinally:\n    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    error, imported = [line for line in result.stderr.splitlines() if line.strip()]
    assert error.startswith("error: ") and message in error, error
    assert imported == "torch imported: False"
