"""How the model is optimised: optimiser, schedule, loss, stages (two-stage fine-tuning) and early stopping."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, field_validator

from medclass.config.base import StrictModel
from medclass.registry import SCHEDULES, registered

ScheduleName = Annotated[str, registered(SCHEDULES)]


def _sensible_lr(value: float | None) -> float | None:
    if value is not None and not (0.0 < value <= 1.0):
        raise ValueError(f"{value:g} makes no sense for a learning rate: use a value in (0, 1], usually 1e-5 to 1e-2")
    return value


Beta = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, description="Learning rate (of the head, and of the backbone unless stages say otherwise).")
    weight_decay: NonNegativeFloat = 0.05
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="Adam/AdamW moment decays, each in [0, 1).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only.")
    layer_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Layer-wise lr decay for the backbone (e.g. 0.75): deeper layers learn faster.",
    )

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float) -> float:
        return _sensible_lr(value)  # type: ignore[return-value]


class SchedulerConfig(StrictModel):
    """The learning-rate schedule, stepped every batch (plateau: after every validation)."""

    name: ScheduleName = "cosine"
    warmup_epochs: NonNegativeFloat = Field(1.0, description="Linear warm-up length in epochs (may be fractional).")
    warmup_start_factor: float = Field(0.01, gt=0.0, le=1.0, description="Warm-up starts at lr x this.")
    min_lr: NonNegativeFloat = Field(1e-6, description="cosine/onecycle: learning rate at the end.")
    step_size: PositiveInt = Field(10, description="step: epochs between decays.")
    gamma: float = Field(0.1, gt=0.0, lt=1.0, description="step/plateau: factor of each decay.")
    patience: PositiveInt = Field(3, description="plateau: validations without improvement before a decay.")


class LossConfig(StrictModel):
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each class by the inverse of its training frequency."
    )
    ordinal: Literal["sord", "ce"] = Field(
        "sord",
        description="Ordinal tasks: sord (soft ordinal targets, a near grade costs less than a far one) or plain "
        "cross-entropy.",
    )
    mixup_alpha: NonNegativeFloat = Field(0.0, description="Mixup strength (0: off).")
    cutmix_alpha: NonNegativeFloat = Field(0.0, description="CutMix strength (0: off).")
    mix_prob: float = Field(1.0, ge=0.0, le=1.0, description="Probability of mixing a batch when mixup/cutmix is on.")


class StageConfig(StrictModel):
    """One stage of a staged recipe. Stages share the optimiser type (adam is adamw with weight_decay 0)."""

    name: str | None = None
    epochs: PositiveInt
    train: Literal["head", "all"] = Field("all", description="head: backbone frozen; all: everything trains.")
    lr: float | None = Field(None, description="Head learning rate; default: optimizer.lr.")
    backbone_lr: float | None = Field(None, description="Backbone learning rate; default: lr.")
    weight_decay: NonNegativeFloat | None = Field(None, description="Default: optimizer.weight_decay.")
    scheduler: ScheduleName | None = Field(None, description="Default: scheduler.name.")
    warmup_epochs: NonNegativeFloat | None = Field(None, description="Default: scheduler.warmup_epochs.")
    min_lr: NonNegativeFloat | None = Field(None, description="Default: scheduler.min_lr.")
    early_stopping_patience: PositiveInt | None = Field(
        None, description="Stop when the monitored metric has not improved for this many epochs (last stage only)."
    )

    @field_validator("lr", "backbone_lr")
    @classmethod
    def _lrs(cls, value: float | None) -> float | None:
        return _sensible_lr(value)


class EarlyStoppingConfig(StrictModel):
    patience: PositiveInt | None = Field(None, description="Epochs without improvement before stopping (None: off).")
    min_delta: NonNegativeFloat = 0.0


class ResolvedStage(StrictModel):
    """A stage with every default filled in, as training uses it."""

    index: int
    name: str
    first_epoch: int
    epochs: int
    train: Literal["head", "all"]
    lr: float
    backbone_lr: float
    weight_decay: float
    scheduler: ScheduleName
    warmup_epochs: float
    min_lr: float
    early_stopping_patience: int | None

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + self.epochs - 1
