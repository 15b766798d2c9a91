"""Parameter groups and the staged learning-rate schedule.

All parameter groups (backbone and head, with timm's layer-wise decay scales when asked) are created once, at the
start, whatever the stage; stages only change learning rates and which parameters train. So a run resumed from a
checkpoint in any stage has the same optimiser state layout as one that never stopped.

``StagedLR`` is written here because no library schedules several stages with different learning rates per
parameter group (backbone vs head) and resumes mid-stage: per step it computes each group's rate from the stage it
is in (warm-up, then constant, cosine, step, one-cycle, or plateau decay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from medclass.config.recipe import OptimizerConfig, ResolvedStage, SchedulerConfig
from medclass.errors import ConfigError
from medclass.models.classifier import Classifier
from medclass.registry import SCHEDULES


def parameter_groups(model: Classifier, config: OptimizerConfig) -> list[dict[str, Any]]:
    """Backbone and head groups; biases and norm weights get no weight decay (timm's convention)."""
    if config.layer_decay is not None:
        if not hasattr(model.backbone, "group_matcher"):
            raise ConfigError("optimizer.layer_decay needs a timm model (it reads timm's layer grouping)")
        backbone = param_groups_layer_decay(model.backbone, config.weight_decay, layer_decay=config.layer_decay)
    else:
        backbone = param_groups_weight_decay(model.backbone, config.weight_decay)
    head = param_groups_weight_decay(model.head, config.weight_decay)
    groups = []
    for part, part_groups in (("backbone", backbone), ("head", head)):
        for group in part_groups:
            if group["params"]:
                decays = group.get("weight_decay", 0.0) > 0
                groups.append({**group, "part": part, "decays": decays, "lr_scale": group.get("lr_scale", 1.0)})
    return groups


def build_optimizer(model: Classifier, config: OptimizerConfig) -> Optimizer:
    groups = parameter_groups(model, config)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    # Adam is AdamW with no weight decay, so stages may move between them on one optimiser.
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


@dataclass(frozen=True)
class SchedulePoint:
    """Where a step is within its stage, after warm-up: what a schedule shape sees."""

    progress: float  # 0 -> 1 over the stage's steps after warm-up
    epoch: int  # epochs into the stage
    floor: float  # min_lr / lr
    config: SchedulerConfig
    plateau_scale: float  # the plateau rule's current factor (1 until the monitored metric stalls)


# A schedule is a shape: the factor on the stage's learning rate at a point. Registered in medclass.registry.SCHEDULES.
register_schedule = SCHEDULES.register


@register_schedule("constant")
def _constant(point: SchedulePoint) -> float:
    return 1.0


@register_schedule("cosine")
def _cosine(point: SchedulePoint) -> float:
    return point.floor + (1 - point.floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, point.progress)))


@register_schedule("step")
def _step(point: SchedulePoint) -> float:
    return point.config.gamma ** (point.epoch // point.config.step_size)


@register_schedule("onecycle")
def _onecycle(point: SchedulePoint) -> float:
    """torch OneCycleLR's cosine shape: up from lr/25 for 30% of the stage, then down to the floor."""
    if point.progress < 0.3:
        return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * point.progress / 0.3))
    return point.floor + (1 - point.floor) * 0.5 * (1 + math.cos(math.pi * (point.progress - 0.3) / 0.7))


@register_schedule("plateau")
def _plateau(point: SchedulePoint) -> float:
    """Decays by gamma after ``patience`` validations without improvement (StagedLR.observe keeps the count)."""
    return point.plateau_scale


class StagedLR(LRScheduler):
    """Per-step learning rate of every group: stage's base rate (head or backbone) x layer scale x schedule."""

    def __init__(
        self,
        optimizer: Optimizer,
        stages: list[ResolvedStage],
        scheduler: SchedulerConfig,
        steps_per_epoch: int,
        adam_without_decay: bool = False,
    ) -> None:
        self.stages = stages
        self.config = scheduler
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.adam_without_decay = adam_without_decay
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0
        self.plateau_stage = -1
        super().__init__(optimizer)

    def stage_at(self, step: int) -> ResolvedStage:
        epoch = step // self.steps_per_epoch
        for stage in self.stages:
            if epoch <= stage.last_epoch:
                return stage
        return self.stages[-1]

    def multiplier(self, stage: ResolvedStage, step: int) -> float:
        """The schedule's factor (and warm-up) at ``step`` within ``stage``."""
        local = step - stage.first_epoch * self.steps_per_epoch
        total = max(1, stage.epochs * self.steps_per_epoch)
        warmup = min(int(round(stage.warmup_epochs * self.steps_per_epoch)), total - 1)
        if local < warmup:
            start = self.config.warmup_start_factor
            return start + (1.0 - start) * local / max(1, warmup)
        shape = SCHEDULES.lookup(stage.scheduler, "scheduler.name")
        return shape(
            SchedulePoint(
                progress=(local - warmup) / max(1, total - warmup),
                epoch=local // self.steps_per_epoch,
                floor=stage.min_lr / stage.lr if stage.lr > 0 else 0.0,
                config=self.config,
                plateau_scale=self.plateau_scale if self.plateau_stage == stage.index else 1.0,
            )
        )

    def get_lr(self) -> list[float]:
        step = max(0, self.last_epoch)
        stage = self.stage_at(step)
        factor = self.multiplier(stage, step)
        rates = []
        for group in self.optimizer.param_groups:
            base = stage.backbone_lr if group["part"] == "backbone" else stage.lr
            rates.append(base * group["lr_scale"] * factor)
            group["weight_decay"] = stage.weight_decay if group["decays"] and not self.adam_without_decay else 0.0
        return rates

    def observe(self, value: float, mode: str) -> None:
        """Plateau schedules: call after each validation with the monitored value."""
        stage = self.stage_at(max(0, self.last_epoch))
        if stage.scheduler != "plateau":
            return
        if self.plateau_stage != stage.index:
            self.plateau_stage, self.plateau_scale, self.plateau_best, self.plateau_bad = stage.index, 1.0, None, 0
        best = self.plateau_best
        better = best is None or (value > best if mode == "max" else value < best)
        if better:
            self.plateau_best, self.plateau_bad = value, 0
            return
        self.plateau_bad += 1
        if self.plateau_bad >= self.config.patience:
            self.plateau_scale *= self.config.gamma
            self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("stages", None)
        state.pop("config", None)
        return state
