"""The experiment configuration: one pydantic schema shared by the YAML files, the CLI and the Python API.

Every section forbids unknown keys, so a typo is an error that names the field instead of a silently ignored
setting. Defaults are the recommended recipe; a YAML file only states what differs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, field_validator, model_validator

from medclass.config.base import StrictModel
from medclass.config.data import DataConfig
from medclass.config.model import HeadConfig, ModelConfig
from medclass.config.recipe import (
    EarlyStoppingConfig,
    LossConfig,
    OptimizerConfig,
    ResolvedStage,
    SchedulerConfig,
    StageConfig,
)
from medclass.config.reporting import EvaluationConfig, TrackingConfig
from medclass.config.tune import TuneConfig
from medclass.metrics import METRICS
from medclass.registry import registered

__all__ = ["HeadConfig", "ModelConfig", "OptimizerConfig", "SchedulerConfig", "LossConfig", "StageConfig"]

# The headline metrics of the registry, and the loss.
MonitorName = Annotated[str, registered(METRICS, METRICS.monitorable)]


class TrainerConfig(StrictModel):
    """Options passed to the Lightning Trainer."""

    max_epochs: PositiveInt | None = Field(
        None, description="Epochs; default 20, or the stages' total when stages are set."
    )
    accelerator: str = "auto"
    devices: int | str = Field(
        "auto", description="Devices per node, e.g. 2 GPUs (or 2 CPU processes with strategy ddp); -1: all; auto."
    )

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: int | str) -> int | str:
        if isinstance(value, int) and (value == 0 or value < -1):
            raise ValueError(f"devices must be a positive number, -1 (all) or auto, not {value}")
        if isinstance(value, str) and value != "auto" and not re.fullmatch(r"\d+(,\d+)*,?|-1", value.strip()):
            raise ValueError(f"devices must be a number, a list of device ids like '0,1', -1 or auto, not {value!r}")
        return value

    num_nodes: PositiveInt = 1
    strategy: str = Field(
        "auto", description="Lightning strategy: auto, ddp, ddp_spawn, ... (multi-device and multi-node)."
    )
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed", "64-true"] = Field(
        "auto",
        description="auto: bf16-mixed on GPUs that support it, else 16-mixed on GPUs; on CPUs 32-true, except "
        "training at input_size >= 128 on a CPU with bf16 instructions (AVX512-BF16 or AMX): bf16-mixed.",
    )
    channels_last: Literal["auto"] | bool = Field(
        "auto",
        description="Channels-last memory layout for the network and its inputs; auto: on GPUs, and on CPUs where "
        "precision auto chose bf16-mixed.",
    )
    compile: bool = Field(
        False, description="torch.compile the network (slow first steps, faster later ones; mostly GPUs)."
    )
    gradient_clip_val: NonNegativeFloat | None = None
    deterministic: bool = False
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Keep an exponential moving average of the weights (e.g. 0.999); validation, "
        "checkpoints and evaluation use the average.",
    )
    limit_train_batches: PositiveInt | float | None = Field(
        None, description="Train on only this many batches (int) or this fraction (float) per epoch: for smoke tests."
    )
    log_every_n_steps: PositiveInt = 10
    progress_bar: bool = True


class CheckpointConfig(StrictModel):
    """Which validation metric picks the best epoch (the one that is evaluated on the test split)."""

    monitor: MonitorName = "auc"
    mode: Literal["max", "min"] | None = Field(None, description="Default: min for loss, max otherwise.")

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        if self.mode is not None:
            return self.mode
        return "max" if METRICS[self.monitor].higher_is_better else "min"


class BenchmarkEntry(StrictModel):
    """One model of a benchmark: its name plus any overrides (dotted keys) of the shared config."""

    name: str
    label: str | None = Field(None, description="Name in the leaderboard; default: the model name.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="e.g. {optimizer.lr: 1e-4, data.batch_size: 32}"
    )


class GateConfig(StrictModel):
    """The gate in front of the model (medclass.evaluation.gate): fitted after training, used by predict and serve."""

    fit: bool = Field(True, description="Fit the gate after training (medclass gate fit RUN does it later).")
    accept: float = Field(
        0.95, ge=0.5, le=0.999, description="Share of validation images whose out-of-distribution score passes."
    )
    max_images: PositiveInt = Field(
        20_000, description="At most this many training (and validation) images, drawn with the seed, fit the gate."
    )


class ExperimentConfig(StrictModel):
    """One experiment: data, model, recipe and where the run directory goes."""

    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Name; runs go to output_dir/<name>/.")
    seed: int = Field(42, ge=0, lt=2**32, description="Seed of everything random in training (0 <= seed < 2**32).")
    output_dir: Path = Field(Path("runs"), description="Parent of the experiment folders.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    stages: list[StageConfig] | None = Field(
        None, description="A staged recipe, e.g. two-stage fine-tuning; default: one stage of trainer.max_epochs."
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    models: list[BenchmarkEntry] | None = Field(None, description="`medclass benchmark`: the models to compare.")
    tune: TuneConfig | None = Field(None, description="`medclass tune`: the search space and how to search it.")

    @model_validator(mode="after")
    def _stages_agree(self) -> ExperimentConfig:
        if self.stages:
            total = sum(stage.epochs for stage in self.stages)
            if self.trainer.max_epochs is not None and self.trainer.max_epochs != total:
                raise ValueError(
                    f"trainer.max_epochs ({self.trainer.max_epochs}) differs from the stages' total ({total}): "
                    "set trainer.max_epochs to null (or remove it) or make them agree"
                )
            for stage in self.stages[:-1]:
                if stage.early_stopping_patience is not None:
                    raise ValueError("stages: early_stopping_patience is only allowed on the last stage")
            if self.early_stopping.patience is not None:
                raise ValueError("with stages, set early_stopping_patience on the last stage instead of early_stopping")
        return self

    @property
    def total_epochs(self) -> int:
        if self.stages:
            return sum(stage.epochs for stage in self.stages)
        return self.trainer.max_epochs or 20

    def resolved_stages(self) -> list[ResolvedStage]:
        """The stages with every default filled in (one stage for a plain recipe)."""
        stages = self.stages or [
            StageConfig(epochs=self.total_epochs, early_stopping_patience=self.early_stopping.patience)
        ]
        resolved, first = [], 0
        for index, stage in enumerate(stages):
            lr = stage.lr if stage.lr is not None else self.optimizer.lr
            resolved.append(
                ResolvedStage(
                    index=index,
                    name=stage.name or (f"stage{index + 1}" if self.stages else "train"),
                    first_epoch=first,
                    epochs=stage.epochs,
                    train=stage.train,
                    lr=lr,
                    backbone_lr=stage.backbone_lr if stage.backbone_lr is not None else lr,
                    weight_decay=stage.weight_decay if stage.weight_decay is not None else self.optimizer.weight_decay,
                    scheduler=stage.scheduler or self.scheduler.name,
                    warmup_epochs=stage.warmup_epochs
                    if stage.warmup_epochs is not None
                    else self.scheduler.warmup_epochs,
                    min_lr=stage.min_lr if stage.min_lr is not None else self.scheduler.min_lr,
                    early_stopping_patience=stage.early_stopping_patience,
                )
            )
            first += stage.epochs
        return resolved
