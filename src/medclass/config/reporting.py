"""Config sections for what happens after training: evaluation (intervals, calibration, thresholds, report) and
experiment tracking (TensorBoard, MLflow, Weights & Biases)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medclass.config.base import StrictModel

# Attributes that identify a person or an examination: never a subgroup (their values would be written into every
# output, one "subgroup" per patient). DICOM attributes of these value representations are refused as well:
# person names (PN), dates and times (DA, DT, TM) and UIDs (UI).
IDENTIFYING = frozenset({
    "PatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "IssuerOfPatientID", "PatientName", "PatientBirthDate",
    "PatientAddress", "PatientTelephoneNumbers", "AccessionNumber", "StudyID", "MedicalRecordLocator",
    "PatientBirthName", "PatientMotherBirthName", "InstitutionAddress",
})  # fmt: skip
IDENTIFYING_VRS = frozenset({"PN", "DA", "DT", "TM", "UI"})


def identifying(name: str) -> bool:
    """Whether a column or DICOM keyword names a person, a date or an identifier."""
    from pydicom.datadict import dictionary_VR

    if name in IDENTIFYING:
        return True
    try:
        return dictionary_VR(name) in IDENTIFYING_VRS
    except (KeyError, ValueError):  # not a DICOM keyword: a CSV column
        return False


class Subgroup(StrictModel):
    """One attribute to report results by: a CSV column or a DICOM attribute keyword, optionally cut into bands."""

    column: str = Field(description="A column of the label CSV, or a DICOM attribute keyword (PatientSex).")
    name: str | None = Field(
        None, description="Its name in the results; default: the column (with bins: <column> band)."
    )
    bins: list[float] | None = Field(
        None,
        description="Edges that cut a numeric value (or a DICOM age such as 045Y) into bands [a, b), e.g. "
        "[0, 40, 60, 80]; values below the first or at/above the last edge get a band of their own.",
    )

    @field_validator("column")
    @classmethod
    def _not_identifying(cls, value: str) -> str:
        if identifying(value):
            raise ValueError(
                f"{value!r} identifies a person, a date or an examination: results by it would write one subgroup "
                "per patient (and the identifiers) into the run; use an attribute such as PatientSex, an age band, "
                "Manufacturer or a site column"
            )
        return value

    @field_validator("bins")
    @classmethod
    def _increasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) < 2 or any(b <= a for a, b in zip(value, value[1:], strict=False))):
            raise ValueError("bins must be at least two increasing edges, e.g. [0, 40, 60, 80]")
        return value

    @property
    def label(self) -> str:
        return self.name or (f"{self.column} band" if self.bins else self.column)


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
    prevalence: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Binary tasks: the share of positives where the model will be used (e.g. 0.02 in screening). "
        "PPV and NPV depend on it: the report gives them at the evaluated split's own prevalence and, when this is "
        "set, at this one too.",
    )  # fmt: skip
    positive_class: str | None = Field(
        None,
        description="Binary tasks: the class that sensitivity, specificity, PPV, NPV, AP, the operating point and "
        "the ROC/PR curves are about. Default: the class whose name is not normal/negative/benign/no "
        "(BreastMNIST: malignant), else the second class.",
    )
    worst_images: int = Field(16, ge=0, description="Worst-classified test images shown in the report.")
    report: bool = Field(True, description="Write plots, report.html and summary.md into the run's report/ folder.")
    subgroups: list[Subgroup] = Field(
        default_factory=list,
        description="Report results per subgroup: columns of the label CSV or DICOM attribute keywords (sex, "
        "site, PatientSex, Manufacturer), each a name or {column, name, bins} (bins make bands of a number, "
        "e.g. age). Each subgroup gets its support, headline metrics and per-class sensitivity/specificity with "
        "bootstrap intervals, and the largest gap between subgroups is named.",
    )

    @field_validator("subgroups", mode="before")
    @classmethod
    def _names_to_subgroups(cls, value):
        if isinstance(value, list):
            return [{"column": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _distinct_subgroup_names(self) -> EvaluationConfig:
        labels = [s.label for s in self.subgroups]
        if len(set(labels)) < len(labels):
            raise ValueError(f"subgroups: two have the same name ({', '.join(labels)}); give each a name")
        return self

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


def artifact_location(uri: str) -> str | None:
    """Where a new MLflow experiment keeps its artifacts: beside a SQLite store (<store folder>/mlartifacts), not
    MLflow's default ./mlruns of whatever folder the command runs in; None (the server decides) otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None
