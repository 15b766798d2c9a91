"""The experiment configuration: one pydantic schema shared by the YAML files, the CLI and the Python API.

Every section forbids unknown keys, so a typo is an error that names the field instead of a silently ignored
setting. Defaults are the recommended recipe; a YAML file only states what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt

from medclass.config.base import StrictModel
from medclass.config.data import DataConfig

MonitorName = Literal["auc", "acc", "loss", "f1_macro", "balanced_acc"]


class ModelConfig(StrictModel):
    """The network: any timm model name with its construction options."""

    name: str = Field("resnet18", description="A timm model name (see `timm.list_models()`).")
    pretrained: bool = False
    in_chans: Literal[1, 3] = Field(3, description="Input channels; grey images are repeated to 3 when this is 3.")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier.")
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0, description="Stochastic depth, where supported.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for timm.create_model.")


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: NonNegativeFloat = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only.")


class SchedulerConfig(StrictModel):
    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: NonNegativeFloat = Field(1.0, description="Linear warm-up length in epochs (may be fractional).")
    warmup_start_factor: float = Field(0.01, gt=0.0, le=1.0, description="Warm-up starts at lr x this.")
    min_lr: NonNegativeFloat = Field(1e-6, description="Learning rate at the end of the cosine.")


class LossConfig(StrictModel):
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)


class TrainerConfig(StrictModel):
    """Options passed to the Lightning Trainer."""

    max_epochs: PositiveInt = 20
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "64-true"] = "32-true"
    gradient_clip_val: NonNegativeFloat | None = None
    deterministic: bool = False
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
        return "min" if self.monitor == "loss" else "max"


class ExperimentConfig(StrictModel):
    """One experiment: data, model, recipe and where the run directory goes."""

    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Name; runs go to output_dir/<name>/.")
    seed: int = 42
    output_dir: Path = Field(Path("runs"), description="Parent of the experiment folders.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
