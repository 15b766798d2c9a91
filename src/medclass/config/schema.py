"""The experiment configuration: one pydantic schema shared by the YAML files, the CLI and the Python API.

Every section forbids unknown keys, so a typo is an error that names the field instead of a silently ignored
setting. Defaults are the recommended recipe; a YAML file only states what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator

AugmentationName = Literal["none", "light", "medical"]
MonitorName = Literal["auc", "acc", "loss", "f1_macro", "balanced_acc"]


class StrictModel(BaseModel):
    """Base for every section: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    """Where the images come from and how they are batched.

    ``source`` names the dataset source (see ``medclass.data.sources``); the source-specific fields sit beside it.
    """

    source: Literal["medmnist"] = "medmnist"
    flag: str = Field(description="MedMNIST dataset flag, e.g. bloodmnist (2D datasets only).")
    size: Literal[28, 64, 128, 224] = Field(28, description="Resolution of the MedMNIST npz file to read.")
    root: Path | None = Field(
        None,
        description="Folder holding the npz files; default: $MEDCLASS_DATA (or its medmnist/ subfolder), "
        "else the medmnist package's folder (~/.medmnist).",
    )
    download: bool = Field(True, description="Download the npz through the medmnist package when it is missing.")
    image_size: PositiveInt | None = Field(
        None, description="Side length the model sees; images are resized to it. Default: the file's size."
    )
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt | None = Field(None, description="Batch size for val/test; default: 2 x batch_size.")
    num_workers: NonNegativeInt = 0
    augmentation: AugmentationName = "light"
    mean: tuple[float, ...] | None = Field(
        None, description="Per-channel normalisation mean in [0, 1]; default: the pretrained model's, else 0.5."
    )
    std: tuple[float, ...] | None = Field(None, description="Per-channel normalisation std; see mean.")

    @model_validator(mode="after")
    def _mean_std_together(self) -> DataConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both data.mean and data.std, or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("data.mean and data.std must have the same number of channels")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("data.std values must be positive")
        return self


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
