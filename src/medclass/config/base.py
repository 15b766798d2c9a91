"""The base of every config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors; values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
