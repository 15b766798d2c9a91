"""The ``tune:`` section: the search space of ``medclass tune``, declared in the experiment config.

Every key of ``space`` is a dotted config key (as on the command line: ``optimizer.lr``, ``model.name``,
``data.input_size``, ``loss.label_smoothing``, ``stages``), and its value says what to try:

- a list: one of these values (``model.name: [resnet18, tf_efficientnet_lite0]``);
- ``{low, high}`` (with ``log: true`` or ``step``): a number in that range; whole numbers when low and high are;
- ``{choices: {name: value}}``: one of several named values that are not plain (a list of stages, a head).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from medclass.config.base import StrictModel
from medclass.metrics import METRICS
from medclass.registry import registered

PLAIN = (str, int, float, bool, type(None))


class NumberRange(StrictModel):
    """A number between low and high (inclusive)."""

    low: int | float
    high: int | float
    log: bool = Field(False, description="Sample on a log scale (learning rates, weight decay).")
    step: int | float | None = Field(None, description="Only values low, low + step, ... (not with log).")

    @model_validator(mode="after")
    def _sound(self) -> NumberRange:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be positive")
        return self

    @property
    def whole(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int)
        )


class NamedChoices(StrictModel):
    """One of several named values (any YAML value: lists, mappings)."""

    choices: dict[str, Any] = Field(min_length=1)


SpaceEntry = list[Any] | NumberRange | NamedChoices


class TuneConfig(StrictModel):
    """How `medclass tune` searches (Optuna): what to try, what to maximise on the validation split."""

    space: dict[str, SpaceEntry] = Field(min_length=1, description="Dotted config key -> what to try.")
    metric: Annotated[str, registered(METRICS, METRICS.monitorable)] | None = Field(
        None, description="The validation metric to optimise; default: checkpoint.monitor."
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna's TPE sampler, or random search.")
    pruner: Literal["median", "none"] = Field(
        "median", description="Stop a trial whose validation metric is below the median of earlier trials' at the "
        "same epoch (after startup_trials trials and warmup_epochs epochs).",
    )  # fmt: skip
    startup_trials: NonNegativeInt = Field(4, description="Trials that are never pruned, to learn what is median.")
    warmup_epochs: NonNegativeInt = Field(2, description="Epochs of every trial that are never pruned.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the sampler.")
    trials: PositiveInt | None = Field(None, description="Trials to run, when --trials and --budget are not given.")

    @field_validator("space")
    @classmethod
    def _plain_lists(cls, space: dict[str, Any]) -> dict[str, Any]:
        for key, entry in space.items():
            if isinstance(entry, list):
                if not entry:
                    raise ValueError(f"{key}: the list of values to try is empty")
                if not all(isinstance(v, PLAIN) for v in entry):
                    raise ValueError(
                        f"{key}: list only plain values (text, numbers, true/false, null); name other values: "
                        "{choices: {one_stage: null, two_stages: [...]}}"
                    )
            if key in ("experiment", "output_dir", "seed", "tune") or key.startswith("tune."):
                raise ValueError(f"{key} cannot be tuned (it names the run, not the recipe)")
        return space
