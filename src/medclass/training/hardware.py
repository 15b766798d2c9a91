"""What ``trainer.precision: auto`` and ``trainer.channels_last: auto`` become on the machine at hand.

GPUs: bf16 autocast where supported (else fp16) and channels-last. CPUs: 32-bit and the default layout, except for
training at large inputs on a CPU with bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast with channels-last
was measured 2.7x faster per epoch at 224 px with the same held-out accuracy, while at 28 px it was slower
(benchmarks/results/cpu_defaults.md). Evaluation and prediction stay 32-bit on CPUs, so that a run's test numbers
are those of the exported model."""

from __future__ import annotations

import torch

# The smallest training input (px) at which CPUs with bf16 instructions train in bf16 with channels-last by default;
# measured on chest X-rays with ResNet-18 at 28, 64, 128 and 224 px (benchmarks/results/cpu_defaults.md).
CPU_BF16_MIN_SIZE = 128


def cpu_has_bf16() -> bool:
    """Whether this CPU has the bf16 matrix instructions (AVX512-BF16 or AMX) that oneDNN uses for bf16 autocast;
    without them bf16 is emulated and slower than 32-bit."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own capability probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def gpu_requested(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def cpu_fast_path(input_size: int | None) -> bool:
    """bf16 autocast and channels-last for CPU training at this input size (None: not training)."""
    return input_size is not None and input_size >= CPU_BF16_MIN_SIZE and cpu_has_bf16()


def resolve_precision(precision: str, accelerator: str, input_size: int | None = None) -> str:
    """auto: bf16-mixed on GPUs that support it, 16-mixed on other GPUs; on CPUs 32-true, or bf16-mixed when
    training (``input_size`` given) at ``CPU_BF16_MIN_SIZE`` px or more on a CPU with bf16 instructions."""
    if precision != "auto":
        return precision
    if gpu_requested(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_fast_path(input_size) else "32-true"


def inference_precision(precision: str, accelerator: str) -> str:
    """Evaluation and prediction: the resolved precision on GPUs, 32-bit on CPUs whatever training used, so that a
    run's test numbers are those of its exported (32-bit) model."""
    return resolve_precision(precision, accelerator) if gpu_requested(accelerator) else "32-true"


def emulated_bf16(precision: str, accelerator: str) -> bool:
    """bf16-mixed asked for on a CPU without bf16 instructions: emulated, measured 40x slower per ResNet-18 step
    than 32-bit (33 s against 0.8 s at 28 px, batch 128, on a 2-core AMD EPYC with AVX2)."""
    return precision == "bf16-mixed" and not gpu_requested(accelerator) and not cpu_has_bf16()


def resolve_channels_last(setting: str | bool, device_type: str, input_size: int | None) -> bool:
    """auto: on GPUs, and on CPUs where training takes the bf16 fast path."""
    if setting != "auto":
        return bool(setting)
    return device_type == "cuda" or (device_type == "cpu" and cpu_fast_path(input_size))
