"""The ``data:`` section: one class per source (``source: medmnist | folder | csv | <registered>``), each a
subclass of :class:`LoaderFields`, registered under its name in medclass.registry.SOURCE_CONFIGS; the config picks
the class by ``source`` (default medmnist).

File sources (folder, csv) also share how images are decoded (size, resizing, channels), cached and split, and
can take their files from a Kaggle dataset (``kaggle: owner/dataset``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeInt,
    PositiveInt,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from medclass.config.base import StrictModel
from medclass.errors import UserError
from medclass.registry import AUGMENTATIONS, SOURCE_CONFIGS, registered

AugmentationName = Annotated[str, registered(AUGMENTATIONS)]
NormalizationName = Literal["auto", "dataset", "imagenet", "half"]
SPLITS = ("train", "val", "test")
MAX_IMAGE_SIZE = 4096  # a side beyond this is a typo, not a model input (one 4096 px RGB image is 48 MiB)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".dcm", ".dicom")


def check_split(split: str, available: tuple[str, ...] | list[str] = SPLITS) -> str:
    """``split`` when it is one of ``available`` (a dataset's own splits, or the three any dataset can have)."""
    if split not in available:
        raise UserError(f"split {split!r} does not exist; choose one of {', '.join(available)}")
    return split


class FoldConfig(StrictModel):
    """One fold of a k-fold cross-validation (``medclass cv`` writes this into each fold's config).

    The dataset's train and val splits are pooled and cut into ``k`` folds, stratified by class and keeping every
    group whole (a patient or lesion, when the source names one, and identical images); the dataset's test split is
    left out. The run holds out fold ``index`` as its ``test`` split (scored once, by the checkpoint chosen
    without it), and trains on the other folds minus a validation share that picks the best epoch (the dataset's
    own val share, grouped and stratified the same way)."""

    k: int = Field(ge=2, le=100, description="Number of folds.")
    index: int = Field(ge=1, description="The held-out fold, 1..k.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the fold assignment (the same for every fold).")

    @model_validator(mode="after")
    def _index_in_range(self) -> FoldConfig:
        if self.index > self.k:
            raise ValueError(f"fold index {self.index} is outside 1..{self.k}")
        return self


class LoaderFields(StrictModel):
    """How batches are formed and normalised; the same for every source. A source's config class adds its own
    fields (and ``source: Literal["<its name>"]``) and may override the methods below."""

    source: str

    input_size: Annotated[int, Field(gt=0, le=MAX_IMAGE_SIZE)] = Field(
        224,
        description="Side length the model sees (images are resized to it on the device). MedMNIST default: the "
        "file's size; others: 224. (Configs written before 0.2 call it image_size; that name is still read.)",
    )
    batch_size: PositiveInt | Literal["auto"] = Field(
        128,
        description="Images per training step. auto: the largest power of two up to 256 whose measured training "
        "step fits in 80% of the device's memory (as `medclass memory` measures it; single-device runs).",
    )
    eval_batch_size: PositiveInt | None = Field(None, description="Batch size for val/test; default: 2 x batch_size.")
    num_workers: NonNegativeInt | Literal["auto"] = Field(
        "auto",
        description="DataLoader worker processes. auto: none on a CPU (in-memory arrays; workers would take the "
        "cores the model needs) or when batches are formed on the device, else up to 8 on a GPU machine.",
    )
    on_device: Literal["auto"] | bool = Field(
        "auto",
        description="Hold the training images on the training device and form and augment whole batches there "
        "(kornia) instead of image by image in a DataLoader. auto: on one GPU when they take at most a quarter "
        "of its memory; on a CPU for images up to 64 px, where it is ~10x cheaper (whatever num_workers says, "
        "so the worker count never changes the model).",
    )
    augmentation: AugmentationName = "light"
    laterality: bool | None = Field(
        None,
        description="true: the images have a left and a right that matter (chest radiographs: the heart is on the "
        "left, a mirrored film shows situs inversus), so training images are never flipped left-right. Default: "
        "decided from the class names (a class naming a side: left/right, l/r, sinister/dexter turns flips off).",
    )
    hflip: bool | None = Field(
        None,
        description="Flip training images left-right at random. Default: as the augmentation preset does, except "
        "where sides matter (data.laterality or class names); true there is refused.",
    )
    vflip: bool | None = Field(
        None,
        description="Flip training images upside down at random. Default: as the preset does (medical), except "
        "where class names name up and down (upper/lower, superior/inferior, top/bottom); true there is refused.",
    )
    sampler: Literal["random", "balanced"] = Field(
        "random", description="balanced: draw training images so every class is seen equally often."
    )
    normalization: NormalizationName = Field(
        "auto",
        description="auto: the pretrained model's statistics, else 0.5/0.5; dataset: the training split's own "
        "per-channel mean/std (see `medclass data stats`); imagenet; half: 0.5/0.5. data.mean/std override it.",
    )
    mean: tuple[float, ...] | None = Field(None, description="Per-channel normalisation mean in [0, 1].")
    std: tuple[float, ...] | None = Field(None, description="Per-channel normalisation std; see mean.")
    cache_dir: Path | None = Field(
        None, description="Decoded images and dataset statistics; default: $MEDCLASS_CACHE, else ~/.cache/medclass."
    )
    fold: FoldConfig | None = Field(
        None,
        description="Cross-validation: train on the other folds of train+val and hold out this one (set by "
        "`medclass cv`; the test split is not used).",
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve_input_size(cls, data: Any) -> Any:
        """Fill the source's default input size, and read the old name (image_size) of the field."""
        if isinstance(data, Mapping):
            data = dict(data)
            old = data.pop("image_size", None)
            if data.get("input_size") is None:
                data["input_size"] = old if old is not None else cls.default_input_size(data)
        return data

    @classmethod
    def default_input_size(cls, data: Mapping[str, Any]) -> int:
        """The side length the model sees when the config does not say."""
        return 224

    def decoding(self) -> tuple[int, str]:
        """(side length images are decoded to, how: squash | crop | pad) when a model package reads new files."""
        return self.input_size, "squash"

    def with_found_data(self, source: Mapping[str, Any]) -> Self:
        """This config with what loading found filled in (the dataset's ``source`` facts), so a run's saved config
        finds the same data later whatever the environment then says. Default: unchanged."""
        return self

    @model_validator(mode="after")
    def _flips_keep_sides(self) -> LoaderFields:
        if self.laterality and self.hflip:
            raise ValueError(
                "data.hflip: true mirrors left and right, but data.laterality: true says the images have sides that "
                "matter; remove one of them"
            )
        return self

    @model_validator(mode="after")
    def _mean_std_together(self) -> LoaderFields:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both data.mean and data.std, or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("data.mean and data.std must have the same number of channels")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("data.std values must be positive")
        return self


class MedMNISTData(LoaderFields):
    source: Literal["medmnist"] = "medmnist"
    flag: str = Field(description="MedMNIST dataset flag, e.g. bloodmnist (2D datasets only).")
    size: Literal[28, 64, 128, 224] = Field(28, description="Resolution of the MedMNIST npz file to read.")
    root: Path | None = Field(
        None,
        description="Folder holding the npz files; default: $MEDCLASS_DATA (or its medmnist/ subfolder), "
        "else the medmnist package's folder (~/.medmnist).",
    )
    download: bool = Field(True, description="Download the npz through the medmnist package when it is missing.")

    @classmethod
    def default_input_size(cls, data: Mapping[str, Any]) -> int:
        """The npz file's resolution."""
        size = data.get("size", 28)
        return size if isinstance(size, int) and not isinstance(size, bool) else 28

    def decoding(self) -> tuple[int, str]:
        return self.size, "squash"  # the npz resolution; the net may see a resized version of it

    def with_found_data(self, source: Mapping[str, Any]) -> Self:
        """Record the folder the npz was found in (from MEDCLASS_DATA or the medmnist package)."""
        if self.root is None and "root" in source:
            return self.model_copy(update={"root": Path(source["root"])})
        return self


class SplitConfig(StrictModel):
    """How images without a given split are divided: seeded, stratified by class, grouped when groups are known."""

    train: float = Field(0.8, gt=0.0, lt=1.0)
    val: float = Field(0.1, gt=0.0, lt=1.0)
    test: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = Field(0, description="Seed of the split, kept apart from the training seed so runs share a split.")
    keep_duplicates_together: bool = Field(
        True, description="Identical image files always land in the same split (no leakage through copies)."
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train + val + test must add up to 1, not {total:g}")
        return self


def is_dicom_keyword(name: str) -> bool:
    """Whether ``name`` is a DICOM attribute keyword of pydicom's dictionary (PatientID, Manufacturer)."""
    from pydicom.datadict import tag_for_keyword

    return bool(re.fullmatch(r"[A-Z][A-Za-z0-9]+", name)) and tag_for_keyword(name) is not None


class DicomOptions(StrictModel):
    """How DICOM files become images (see medclass.data.dicom for the windowing: modality LUT, the file's VOI LUT
    or window, else a 0.5-99.5 percentile window; MONOCHROME1 inverted)."""

    frame: Literal["middle", "first"] | NonNegativeInt = Field(
        "middle",
        description="Which frame of a multi-frame file is the image: middle, first, or a 0-based number (a file "
        "with fewer frames is skipped with that reason). Single-frame files are read whole.",
    )


class FileSourceFields(LoaderFields):
    """Decoding, caching and splitting for sources made of image files."""

    kaggle: str | None = Field(
        None,
        description="owner/dataset on Kaggle: downloaded (and cached) with kagglehub; relative paths below then "
        "start in the downloaded folder.",
    )
    resize: Literal["squash", "crop", "pad"] = Field(
        "squash",
        description="How images become input_size x input_size: squash (ignore aspect), crop (centre), pad (black).",
    )
    channels: Literal["auto", 1, 3] = Field(
        "auto",
        description="Stored channels; auto: 1 when every image is grey (by its mode, or RGB with R = G = B), else 3.",
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    strict: bool = Field(False, description="Stop at the first unreadable or missing image instead of skipping it.")
    allow_label_conflicts: bool = Field(
        False,
        description="Train even when identical image files carry different labels (they are still counted and "
        "named in data.json and the report); by default that stops the run.",
    )
    cache: bool = Field(True, description="Keep decoded, resized images in a memory-mapped file for later runs.")
    extensions: tuple[str, ...] = Field(
        IMAGE_EXTENSIONS,
        description="File endings read as images (files with no ending are read too when they are DICOM).",
    )
    dicom: DicomOptions = Field(default_factory=DicomOptions)
    group_column: str | None = Field(
        None,
        description="A patient or lesion id, so that every group lands in one split only: a column of the label CSV, "
        "or a DICOM attribute keyword (PatientID, StudyInstanceUID) read from each file's header when the CSV "
        "has no such column (folder sources: keywords only). Run outputs carry a keyed hash of it, never the id.",
    )

    @field_validator("kaggle")
    @classmethod
    def _kaggle_handle(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+(/versions/\d+)?", value):
            raise ValueError(f"kaggle must look like owner/dataset, not {value!r}")
        return value

    @field_validator("extensions")
    @classmethod
    def _lower_dotted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in value)

    def decoding(self) -> tuple[int, str]:
        return self.input_size, self.resize


class FolderData(FileSourceFields):
    """``root/<class>/*`` (split by ``split``), or ``root/{train,val,test}/<class>/*`` (a missing val is carved
    out of train)."""

    source: Literal["folder"] = "folder"
    root: Path

    @field_validator("group_column")
    @classmethod
    def _dicom_keyword(cls, value: str | None) -> str | None:
        if value is not None and not is_dicom_keyword(value):
            raise ValueError(
                f"group_column {value!r} is not a DICOM attribute keyword (e.g. PatientID, StudyInstanceUID); "
                "a folder source has no CSV to take a column from"
            )
        return value


class CsvData(FileSourceFields):
    """Images plus a label CSV (HAM10000/ISIC style)."""

    source: Literal["csv"] = "csv"
    csv: Path = Field(description="The label file.")
    image_dir: Path | None = Field(None, description="Folder of the images; default: the CSV's folder.")
    image_column: str = Field(
        "image_id", description="Column with the image file name or id (path relative to image_dir)."
    )
    label_column: str = Field("label", description="Column with the class name.")
    label_separator: str | None = Field(
        None, description="Separator of several labels in one cell (e.g. '|'): makes the task multi-label."
    )
    split_column: str | None = Field(None, description="Column with train/val/test per image.")
    split_pattern: str | None = Field(
        None,
        description="Regular expression on the image name whose group 'split' (or first group) gives "
        "train/val/test, e.g. '_(train|val|test)_'.",
    )
    image_suffix: str | None = Field(
        None, description="Appended to ids that have no file ending, e.g. '.jpg'; default: try the known endings."
    )
    classes: list[str] | None = Field(None, description="Class order; default: sorted label values.")

    @field_validator("split_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise ValueError(f"split_pattern is not a valid regular expression: {exc}") from None
            if pattern.groups == 0:
                raise ValueError("split_pattern needs a group around the split name, e.g. '_(train|val|test)_'")
        return value

    @model_validator(mode="after")
    def _one_split_rule(self) -> CsvData:
        if self.split_column and self.split_pattern:
            raise ValueError("give split_column or split_pattern, not both")
        return self


SOURCE_CONFIGS.register("medmnist")(MedMNISTData)
SOURCE_CONFIGS.register("folder")(FolderData)
SOURCE_CONFIGS.register("csv")(CsvData)
DEFAULT_SOURCE = "medmnist"


def source_config_class(raw: Mapping[str, Any]) -> type[LoaderFields]:
    """The registered config class for a raw ``data:`` mapping (by its ``source``, default medmnist)."""
    source = raw.get("source", DEFAULT_SOURCE)
    if not isinstance(source, str) or source not in SOURCE_CONFIGS:
        raise ValueError(SOURCE_CONFIGS.unknown(str(source)))
    return SOURCE_CONFIGS[source]


def _as_source_config(value: Any) -> Any:
    """A raw mapping becomes its source's config class (the config's loader, validate_config, reports field
    errors by name before this runs; this serves direct construction from Python)."""
    if isinstance(value, Mapping):
        return source_config_class(value).model_validate(dict(value))
    return value


# The data section: any registered source's config (serialised with all of its own fields).
DataConfig = Annotated[SerializeAsAny[LoaderFields], BeforeValidator(_as_source_config)]


def external_spec(spec: str) -> tuple[str, Path]:
    """An ``--external`` value: ``NAME=PATH`` -> (NAME, PATH); a plain path is named after its last part."""
    given, _, rest = spec.partition("=")
    if rest and re.fullmatch(r"[A-Za-z0-9._-]+", given):
        return given, Path(rest).expanduser()
    path = Path(spec).expanduser()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem if path.suffix else path.name).strip("._") or "external"
    return name, path
