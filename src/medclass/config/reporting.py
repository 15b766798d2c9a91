"""Config sections for what happens after training: evaluation (intervals, calibration, thresholds, report) and
experiment tracking (TensorBoard, MLflow, Weights & Biases)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medclass.config.base import StrictModel


class EvaluationConfig(StrictModel):
    """How a run is evaluated on its held-out split and reported."""

    bootstrap: int = Field(
        1000, ge=0, description="Bootstrap resamples for the 95% confidence intervals (0: no intervals)."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Coverage of the confidence intervals.")
    calibration_bins: int = Field(
        15, gt=0, le=1000, description="Equal-width confidence bins for ECE and the diagram (1 to 1000)."
    )
    operating_point: Literal["youden", "sensitivity"] = Field(
        "youden",
        description="Binary tasks: the decision threshold chosen on validation, by Youden's J or the lowest "
        "specificity cost reaching target_sensitivity.",
    )
    target_sensitivity: float = Field(0.9, gt=0.0, le=1.0)
    positive_class: str | None = Field(
        None,
        description="Binary tasks: the class that sensitivity, specificity, PPV, NPV, AP, the operating point and "
        "the ROC/PR curves are about. Default: the class whose name is not normal/negative/benign/no "
        "(BreastMNIST: malignant), else the second class.",
    )
    worst_images: int = Field(16, ge=0, description="Worst-classified test images shown in the report.")
    report: bool = Field(True, description="Write plots, report.html and summary.md into the run's report/ folder.")

    @model_validator(mode="after")
    def _bootstrap_size(self) -> EvaluationConfig:
        if 0 < self.bootstrap < 100:
            raise ValueError(f"bootstrap: {self.bootstrap} resamples give unstable intervals; use 0 (off) or >= 100")
        return self


class TrackingConfig(StrictModel):
    """Experiment trackers. Each is optional; one that fails warns once and training goes on without it."""

    tensorboard: bool = Field(False, description="Write TensorBoard event files to <run>/tensorboard.")
    mlflow: bool = Field(False, description="Log params, per-epoch metrics, the report and the model to MLflow.")
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow server or database; default: a local SQLite store sqlite:///<output_dir>/mlflow.db "
        "with artifacts under <output_dir>/mlartifacts.",
    )
    mlflow_experiment: str | None = Field(None, description="MLflow experiment name; default: the experiment name.")
    wandb: bool = Field(False, description="Log to Weights & Biases (offline files when no API key is set).")
    wandb_project: str = "medclass"
    wandb_mode: Literal["auto", "online", "offline"] = Field(
        "auto", description="auto: online when WANDB_API_KEY is set, else offline (sync later with `wandb sync`)."
    )
