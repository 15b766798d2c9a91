"""`medclass memory` on CPU: the line fitted through measured peaks predicts the measured peak of a larger batch,
for two models; and the command's table and bad options."""

from __future__ import annotations

import pytest
from cli_runner import assert_one_line_error, medclass

from medclass.training.memory import estimate_memory, measure_step


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "mobilenetv3_small_100"])
def test_prediction_matches_a_measured_larger_batch(model: str) -> None:
    estimate = estimate_memory(model, 96, batch_sizes=(4, 16), budget_bytes=8 * 1024**3, device="cpu")
    assert estimate.bytes_per_image > 0 and estimate.fixed_bytes > 0
    measured = measure_step(model, 96, 32, "32-true", "cpu")
    predicted = estimate.predict(32)
    print(f"{model}: predicted {predicted / 2**20:.0f} MiB at batch 32, measured {measured / 2**20:.0f} MiB")
    assert predicted == pytest.approx(measured, rel=0.10)
    expected = int((8 * 1024**3 - estimate.fixed_bytes) // estimate.bytes_per_image)
    assert estimate.max_batch_size == min(expected, 65536)


@pytest.mark.slow
def test_memory_command_table_and_errors() -> None:
    result = medclass("memory", "--model", "resnet18", "--input-size", "64", "--batch-size", "64", "--measure", "4,16",
                      "--memory-gb", "16")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "resnet18" in result.stdout and "MiB per" in result.stdout and "fits" in result.stdout
    assert_one_line_error(medclass("memory", "--model", "resnet181"), "did you mean resnet18")
    assert_one_line_error(medclass("memory", "--model", "resnet18", "--measure", "4"), "at least two")
    assert_one_line_error(medclass("memory", "--model", "resnet18", "--precision", "fp8"), "--precision 'fp8'")


@pytest.mark.slow
def test_memory_at_its_defaults_for_small_images_prints_the_table() -> None:
    """28 px images: the images' share of a step is lost in the noise of a process's peak memory at batches 4 and
    16; a larger batch is measured, and where even that is too little the table says so ("<", an upper bound)
    instead of failing. A model name that does not exist is an error after the table of the others."""
    result = medclass("memory", "--model", "mobilenetv3_small_100,resnet181", "--image-size", "28")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "mobilenetv3_small_100" in result.stdout and "MiB per" in result.stdout, result.stdout
    assert "did you mean resnet18" in result.stderr and "Traceback" not in result.stderr
    assert "fits" in result.stdout and "128: " in result.stdout, "a larger batch was measured"
