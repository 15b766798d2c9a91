"""`medclass data inspect | stats | build` as a user runs them, and their bad inputs."""

from __future__ import annotations

from pathlib import Path

from cli_runner import assert_one_line_error, medclass
from test_cli import REPO


def test_inspect_a_folder(tmp_path: Path, data_dir: Path) -> None:
    result = medclass(
        "data", "inspect", str(data_dir / "brain_mri_4class"), "data.input_size=32", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "glioma" in result.stdout and "400" in result.stdout
    assert (tmp_path / "counts.png").is_file() and (tmp_path / "samples_notumor.png").is_file()
    assert "not usable images" in result.stderr  # MD5SUMS.txt sits beside the class folders


def test_inspect_a_config(tmp_path: Path) -> None:
    result = medclass("data", "inspect", str(REPO / "configs" / "breastmnist.yaml"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "malignant" in result.stdout and (tmp_path / "report.md").is_file()


def test_stats_prints_mean_and_std(data_dir: Path) -> None:
    result = medclass("data", "stats", str(REPO / "configs" / "brain_mri.yaml"), "data.input_size=32")
    assert result.returncode == 0, result.stderr
    assert "mean: [0." in result.stdout and "std:  [0." in result.stdout
    # where the numbers are kept, the first time (or read back: another test in this session may have asked first)
    # and then read back
    (where,) = [line for line in result.stdout.splitlines() if line.startswith(("stored in ", "read from "))]
    stored = where.removeprefix("stored in ").removeprefix("read from ")
    assert Path(stored).is_file()
    again = medclass("data", "stats", str(REPO / "configs" / "brain_mri.yaml"), "data.input_size=32")
    assert f"read from {stored}" in again.stdout


def test_build(tmp_path: Path) -> None:
    recipe = str(REPO / "configs" / "build" / "image_types.yaml")
    result = medclass("data", "build", recipe, f"output={tmp_path / 'built'}", "low_quality.count=12")
    assert result.returncode == 0, result.stderr
    assert "LOW_QUALITY" in result.stdout and (tmp_path / "built" / "manifest.csv").is_file()


def test_data_command_errors(tmp_path: Path) -> None:
    assert_one_line_error(medclass("data", "inspect", str(tmp_path / "missing.yaml")), "not found")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(medclass("data", "inspect", str(tmp_path / "empty")), "no class folders")
    (tmp_path / "recipe.yaml").write_text("output: x\ncategories: {}\n")
    assert_one_line_error(medclass("data", "build", str(tmp_path / "recipe.yaml")), "at least one category")
