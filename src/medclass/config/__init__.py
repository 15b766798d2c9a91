"""The experiment configuration: schema, loading, overrides."""

from medclass.config.data import (
    CsvData,
    DataConfig,
    FileSourceFields,
    FoldConfig,
    FolderData,
    MedMNISTData,
    SplitConfig,
)
from medclass.config.loading import apply_overrides, config_to_dict, dump_config, load_config, validate_config
from medclass.config.model import HeadConfig
from medclass.config.recipe import EarlyStoppingConfig, ResolvedStage, StageConfig
from medclass.config.reporting import EvaluationConfig, TrackingConfig
from medclass.config.schema import (
    BenchmarkEntry,
    CheckpointConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
)
from medclass.config.tune import TuneConfig

__all__ = [
    "BenchmarkEntry",
    "EarlyStoppingConfig",
    "EvaluationConfig",
    "TrackingConfig",
    "HeadConfig",
    "ResolvedStage",
    "StageConfig",
    "CheckpointConfig",
    "CsvData",
    "DataConfig",
    "FileSourceFields",
    "FoldConfig",
    "FolderData",
    "MedMNISTData",
    "SplitConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainerConfig",
    "TuneConfig",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "load_config",
    "validate_config",
]
