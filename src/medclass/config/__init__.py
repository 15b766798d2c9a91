"""The experiment configuration: schema, loading, overrides."""

from medclass.config.loading import apply_overrides, config_to_dict, dump_config, load_config, validate_config
from medclass.config.schema import (
    CheckpointConfig,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
)

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "load_config",
    "validate_config",
]
