"""Optimiser and learning-rate schedule from the config (timm's optimiser factory, torch's schedulers)."""

from __future__ import annotations

from typing import Any

from timm.optim import create_optimizer_v2
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from medclass.config.schema import OptimizerConfig, SchedulerConfig


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> Optimizer:
    """The configured optimiser; biases and normalisation weights get no weight decay (timm's convention)."""
    kwargs: dict[str, Any] = {}
    if config.name in ("adam", "adamw"):
        kwargs["betas"] = config.betas
    return create_optimizer_v2(
        model,
        opt=config.name,
        lr=config.lr,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        **kwargs,
    )


def build_scheduler(
    optimizer: Optimizer, config: SchedulerConfig, total_steps: int, steps_per_epoch: int
) -> LRScheduler:
    """A per-step schedule: linear warm-up for ``warmup_epochs``, then cosine decay to ``min_lr`` (or constant)."""
    total_steps = max(1, total_steps)
    warmup_steps = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps - 1)
    if config.name == "cosine":
        main: LRScheduler = CosineAnnealingLR(
            optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=config.min_lr
        )
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup_steps <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=config.warmup_start_factor, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, schedulers=[warmup, main], milestones=[warmup_steps])
