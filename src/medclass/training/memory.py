"""How much memory a training step needs, measured rather than guessed: one real step (forward, backward, AdamW
update) per batch size, peak memory recorded, a straight line fitted through the points, and the largest batch
that fits a memory budget read off it.

On a GPU the peak is ``torch.cuda.max_memory_allocated``; on a CPU it is the peak resident memory of a fresh
process during the steps (each batch size in its own Python process; on Linux the peak is reset after imports and
model creation, which can peak higher than small training steps do)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medclass.config import ModelConfig
from medclass.errors import UserError
from medclass.models import check_model_name, create_model

GIB = 1024**3
MAX_REPORTED_BATCH = 65536  # beyond this the straight line says nothing useful


@dataclass
class MemoryEstimate:
    model: str
    device: str
    input_size: int
    precision: str
    parameters: int
    measured: dict[int, int]  # batch size -> peak bytes
    fixed_bytes: float  # intercept: weights, optimizer state, framework
    bytes_per_image: float  # slope
    budget_bytes: int
    max_batch_size: int
    below_resolution: bool = False  # the images' share was lost in the noise: bytes_per_image is an upper bound

    def predict(self, batch_size: int) -> float:
        return self.fixed_bytes + self.bytes_per_image * batch_size


def _step(model_name: str, input_size: int, batch_size: int, precision: str, device: str, in_chans: int) -> int:
    """Peak bytes of one training step (after one warm-up step, so lazy allocations are counted once)."""
    torch.manual_seed(0)
    net = create_model(ModelConfig(name=model_name, pretrained=False, in_chans=in_chans), num_classes=10).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    images = torch.randn(batch_size, in_chans, input_size, input_size, device=device)
    targets = torch.randint(0, 10, (batch_size,), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()  # imports and model creation may peak higher than training does; count the steps only
    for _ in range(2):
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return _peak_rss()


def _reset_peak_rss() -> None:
    """Linux: writing 5 to /proc/self/clear_refs resets the process's peak resident size (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the peak counts from process start: a little more than the steps alone


def _peak_rss() -> int:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _child_main() -> None:
    """Entry of the measuring process: arguments as JSON on argv, the peak (or the error) as JSON on stdout."""
    args = json.loads(sys.argv[1])
    try:
        print(json.dumps({"peak": _step(*args)}))
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which turns it into a clear error
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))


def measure_step(model: str, input_size: int, batch_size: int, precision: str, device: str, in_chans: int = 3) -> int:
    if device == "cuda":
        try:
            return _step(model, input_size, batch_size, precision, device, in_chans)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return -1
    # A fresh interpreter starts clean (a forked process inherits its parent's peak). Not multiprocessing's spawn:
    # that re-imports the caller's __main__, which re-runs a script or notebook cell without a __main__ guard.
    args = json.dumps([model, input_size, batch_size, precision, device, in_chans])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    code = "from medclass.training.memory import _child_main; _child_main()"
    done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, env=env, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return -1  # killed (out of memory) or crashed: this batch size does not fit
    result = json.loads(lines[-1])
    if "error" in result:
        raise UserError(f"measuring {model} at batch size {batch_size} failed: {result['error']}")
    return int(result["peak"])


def default_budget(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.get_device_properties(0).total_memory)
    return available_host_memory()


def available_host_memory() -> int:
    """Memory a new allocation can get now: Linux's MemAvailable (free pages plus the page cache the kernel would
    drop), else the free pages. Free pages alone count a full page cache as used: after reading a large dataset
    they can be a few hundred MiB on a machine with gigabytes to spare."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def estimate_memory(
    model: str,
    input_size: int,
    precision: str = "32-true",
    batch_sizes: tuple[int, ...] = (4, 16),
    budget_bytes: int | None = None,
    device: str | None = None,
    in_chans: int = 3,
) -> MemoryEstimate:
    """Measure, fit peak = fixed + per_image * batch, and find the largest batch within the budget."""

    check_model_name(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "16-mixed" and device == "cpu":
        raise UserError("precision 16-mixed needs a GPU; use 32-true or bf16-mixed on a CPU")
    if len(set(batch_sizes)) < 2:
        raise UserError("give at least two different batch sizes to measure")
    measured = {b: measure_step(model, input_size, b, precision, device, in_chans) for b in sorted(set(batch_sizes))}
    fitted = {b: m for b, m in measured.items() if m > 0}
    if len(fitted) < 2:
        raise UserError(f"{model} at {input_size} px does not fit even at batch size {min(batch_sizes)} on {device}")
    slope, intercept = _fit(fitted)
    if slope * max(fitted) < NOISE_BYTES and device == "cpu":
        # Small images: the images' share of a step is smaller than the noise of a process's peak RSS. Measure a
        # batch 8 times larger before fitting again.
        larger = max(fitted) * 8
        measured[larger] = measure_step(model, input_size, larger, precision, device, in_chans)
        fitted = {b: m for b, m in measured.items() if m > 0}
        slope, intercept = _fit(fitted)
    below = slope * max(fitted) < NOISE_BYTES
    if below:  # still lost in the noise: say so, and use the noise over the largest batch as an upper bound
        slope = max(slope, NOISE_BYTES / max(fitted))
        intercept = max(fitted.values()) - slope * max(fitted)
    budget = budget_bytes or default_budget(device)
    max_batch = min(MAX_REPORTED_BATCH, int((budget - intercept) // slope)) if budget > intercept else 0

    parameters = sum(p.numel() for p in create_model(ModelConfig(name=model, pretrained=False), 10).parameters())
    return MemoryEstimate(model, device, input_size, precision, parameters, measured, float(intercept), slope,
                          int(budget), max(0, max_batch), below)  # fmt: skip


NOISE_BYTES = 32 * 2**20  # how much the peak RSS of two identical fresh processes can differ


def _fit(fitted: dict[int, int]) -> tuple[float, float]:
    """(slope, intercept) of peak bytes against batch size."""
    sizes = np.array(list(fitted), dtype=np.float64)
    peaks = np.array(list(fitted.values()), dtype=np.float64)
    slope, intercept = np.polyfit(sizes, peaks, 1)
    return float(slope), float(intercept)


AUTO_BATCH_CAP = 256  # larger batches rarely train better and need the learning rate retuned
AUTO_BUDGET_SHARE = 0.8  # headroom for the data, validation and allocator fragmentation


def auto_batch_size(
    model: str, input_size: int, precision: str, device: str, in_chans: int, n_train: int
) -> tuple[int, MemoryEstimate]:
    """``data.batch_size: auto``: the largest power of two up to 256 (and the training split's size) whose
    measured step fits in 80% of the device's memory."""
    measured_precision = precision if precision in ("32-true", "bf16-mixed", "16-mixed") else "32-true"
    estimate = estimate_memory(
        model, input_size, measured_precision, budget_bytes=int(AUTO_BUDGET_SHARE * default_budget(device)),
        device=device, in_chans=in_chans,
    )  # fmt: skip
    limit = min(estimate.max_batch_size, AUTO_BATCH_CAP, max(1, n_train))
    if limit < 1:
        raise UserError(
            f"data.batch_size auto: {model} at {input_size} px does not fit a single image in 80% of the {device}'s "
            "memory; use a smaller input_size or model"
        )
    return 1 << (limit.bit_length() - 1), estimate
