"""The recipe of `medclass data build`: sources mapped into target categories, plus a synthetic LOW_QUALITY class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, PositiveInt, model_validator

from medclass.config.base import StrictModel
from medclass.config.data import IMAGE_EXTENSIONS
from medclass.registry import DEGRADATIONS, registered

DegradationName = Annotated[str, registered(DEGRADATIONS)]


class BuildSource(StrictModel):
    """Images for one category: every image below a folder, or the rows of a label CSV with chosen labels."""

    folder: Path | None = Field(None, description="Take images below this folder (recursively).")
    classes: list[str] | None = Field(None, description="With folder: only these subfolders.")
    csv: Path | None = Field(None, description="A label CSV; images are taken from image_dir.")
    image_dir: Path | None = Field(None, description="With csv: the image folder; default: the CSV's folder.")
    image_column: str = "image_id"
    label_column: str = "label"
    labels: list[str] | None = Field(None, description="With csv: only rows with these labels.")
    image_suffix: str | None = Field(None, description="With csv: appended to ids without a file ending.")
    max_images: PositiveInt | None = Field(None, description="Cap for this source (a seeded random choice).")
    name: str | None = Field(None, description="Name in the manifest; default: the folder or CSV name.")

    @model_validator(mode="after")
    def _one_kind(self) -> BuildSource:
        if (self.folder is None) == (self.csv is None):
            raise ValueError("a source needs exactly one of folder or csv")
        if self.classes is not None and self.folder is None:
            raise ValueError("classes goes with folder")
        if self.labels is not None and self.csv is None:
            raise ValueError("labels goes with csv")
        return self

    @property
    def display_name(self) -> str:
        return self.name or (self.folder.name if self.folder is not None else self.csv.stem)  # type: ignore[union-attr]


class DegradationRanges(StrictModel):
    """Strength ranges, each drawn uniformly per image. Pixel lengths are for a 256 px image and scale with size."""

    blur_radius: tuple[float, float] = (2.0, 5.0)
    noise_sigma: tuple[float, float] = (15.0, 40.0)
    jpeg_quality: tuple[int, int] = (4, 15)
    downscale_factor: tuple[float, float] = (4.0, 10.0)
    overexposure_gain: tuple[float, float] = (1.8, 3.0)
    underexposure_gain: tuple[float, float] = (0.15, 0.4)
    motion_length: tuple[int, int] = (9, 25)


class LowQualityConfig(StrictModel):
    name: str = "LOW_QUALITY"
    count: PositiveInt = Field(description="How many degraded images to make.")
    from_categories: list[str] | None = Field(None, description="Categories to degrade images of; default: all.")
    degradations: list[DegradationName] = Field(
        default_factory=DEGRADATIONS.known, description="Default: every registered degradation."
    )
    per_image: tuple[PositiveInt, PositiveInt] = Field((1, 2), description="How many degradations each image gets.")
    ranges: DegradationRanges = Field(default_factory=DegradationRanges)


class BuildRecipe(StrictModel):
    output: Path = Field(description="The image-folder dataset to write (one folder per category).")
    seed: int = 0
    categories: dict[str, list[BuildSource]]
    low_quality: LowQualityConfig | None = None
    max_side: PositiveInt | None = Field(None, description="Shrink larger images to this longer side; default: copy.")
    size: PositiveInt | None = Field(
        None,
        description="Write every image, of every category and LOW_QUALITY, at size x size (squashed, small ones "
        "enlarged): then the image's size cannot tell a classifier its category. Replaces max_side.",
    )
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    overwrite: bool = Field(False, description="Replace an existing output folder.")

    @model_validator(mode="after")
    def _categories_consistent(self) -> BuildRecipe:
        if not self.categories:
            raise ValueError("categories needs at least one category")
        if self.low_quality is not None:
            if self.low_quality.name in self.categories:
                raise ValueError(f"low_quality.name {self.low_quality.name!r} is also a category")
            unknown = set(self.low_quality.from_categories or []) - set(self.categories)
            if unknown:
                raise ValueError(f"low_quality.from_categories names unknown categories: {', '.join(sorted(unknown))}")
            low, high = self.low_quality.per_image
            if low > high or high > len(self.low_quality.degradations):
                raise ValueError("low_quality.per_image must be (min, max) with max <= the number of degradations")
        return self
