"""An external set: labelled images from elsewhere, every one of them used (no split), decoded as a model package
reads files. ``evaluate MODEL --external NAME=PATH`` scores it.

PATH is a folder of class folders (DICOM files included), a pre-split folder (train/val/test: all its images are
used), a label CSV (columns ``image_id`` and ``label``, the images beside it or below; for other columns give a
config YAML), or an experiment YAML whose whole dataset (every split) is used."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medclass.config import load_config
from medclass.config.data import CsvData, FolderData, LoaderFields, external_spec
from medclass.data.cache import cache_root, decode_images
from medclass.data.dataset import ImageSplit
from medclass.data.files import FileIndex, index_csv, index_folder
from medclass.data.images import DECODE_ERRORS, image_dimensions
from medclass.data.sources import load_dataset
from medclass.data.sources.files import label_arrays
from medclass.errors import DataError, UserError


@dataclass(frozen=True)
class Decoding:
    """How a model reads files: side length, resize mode, channels (1 or 3), DICOM frame."""

    size: int
    resize: str
    channels: int
    dicom_frame: str = "middle"


@dataclass
class ExternalSet:
    name: str
    location: str  # what was given
    layout: str  # how it was read, in words
    classes: list[str]
    task: str
    images: ImageSplit  # every usable labelled image, in a stable order, ``files`` its names
    paths: list[Path | None]  # each image's file (None for array datasets)
    skipped: list[dict[str, str]] = field(default_factory=list)
    native_side: int | None = None  # the stored images' side (array datasets), for the gate's size check
    config: FolderData | CsvData | None = None  # how the files were indexed (subgroups read their columns)

    def __len__(self) -> int:
        return len(self.images)

    def short_sides(self) -> list[int | None]:
        """Each source image's shorter side (header only; None where unknown): the gate's size check needs it."""
        sides: list[int | None] = []
        for path in self.paths:
            if path is None:
                sides.append(self.native_side)
                continue
            try:
                sides.append(min(image_dimensions(path)))
            except DECODE_ERRORS:
                sides.append(None)
        return sides


def load_external(spec: str, decoding: Decoding, cache_dir: Path | None = None) -> ExternalSet:
    """Read every labelled image of ``spec`` (see the module docstring) at ``decoding``."""
    name, path = external_spec(spec)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return _from_config(name, str(path), load_config(path).data, decoding, cache_dir)
    if path.is_file() and path.suffix.lower() == ".csv":
        config = CsvData(csv=path, input_size=decoding.size, cache_dir=cache_dir)
        return _from_index(name, str(path), index_csv(config, path, path.parent), config, decoding)
    if path.is_dir():
        config = FolderData(root=path, input_size=decoding.size, cache_dir=cache_dir)
        return _from_index(name, str(path), index_folder(config, path, whole=True), config, decoding)
    raise UserError(
        f"--external {spec}: {path} is not a folder, a label CSV or an experiment YAML file"
        + (" (it does not exist)" if not path.exists() else "")
    )


def _from_config(name: str, location: str, data: LoaderFields, decoding: Decoding, cache_dir: Path | None
                 ) -> ExternalSet:  # fmt: skip
    if isinstance(data, FolderData | CsvData):
        config = data.model_copy(update={"input_size": decoding.size, "cache_dir": cache_dir or data.cache_dir})
        if isinstance(config, FolderData):
            index = index_folder(config, config.root, whole=True)
        else:
            image_dir = config.image_dir if config.image_dir is not None else config.csv.parent
            index = index_csv(config, config.csv, image_dir)
        return _from_index(name or index.name, location, index, config, decoding)
    # Any other source (MedMNIST, a registered one): its dataset as the source gives it, all splits pooled.
    dataset = load_dataset(data)
    images, labels, files = [], [], []
    for split_name, split in dataset.splits.items():
        for i in range(len(split)):
            images.append(_resized(split.image(i), decoding))
            files.append(split.files[i] if split.files is not None else f"{dataset.name}:{split_name}[{i}]")
        labels.append(np.asarray(split.labels))
    side = next(iter(dataset.splits.values())).image(0).shape[0]
    pooled = ImageSplit(np.stack(images), np.concatenate(labels), files=files)
    return ExternalSet(name or dataset.name, location, f"{data.source} dataset, all splits", list(dataset.classes),
                       dataset.task, pooled, [None] * len(files), list(dataset.skipped), native_side=side)  # fmt: skip


def _from_index(
    name: str, location: str, index: FileIndex, config: FolderData | CsvData, decoding: Decoding
) -> ExternalSet:
    if not index.records:
        raise DataError(f"--external {location}: no labelled image files were found")
    labels, _ = label_arrays(index)
    paths = [r.path for r in index.records]
    decoded = decode_images(
        paths, decoding.size, decoding.resize, decoding.channels,  # type: ignore[arg-type]
        cache_root(config.cache_dir) if config.cache else None, decoding.dicom_frame,  # type: ignore[arg-type]
    )  # fmt: skip
    skipped = [{"file": index.name_of(Path(e["file"])), "reason": e["reason"]} for e in index.skipped]
    skipped += [{"file": index.name_of(paths[i]), "reason": reason} for i, reason in sorted(decoded.failures.items())]
    rows = np.array([i for i in range(len(paths)) if i not in decoded.failures], dtype=np.int64)
    if len(rows) == 0:
        raise DataError(f"--external {location}: none of its {len(paths)} image files could be read")
    images = ImageSplit(decoded.images, labels[rows], rows=rows, files=[index.name_of(paths[i]) for i in rows])
    return ExternalSet(name, location, index.layout, list(index.classes), index.task, images,
                       [paths[i] for i in rows], skipped, config=config)  # fmt: skip


def _resized(image: np.ndarray, decoding: Decoding) -> np.ndarray:
    """An array dataset's image at the model's decode size and channels (bilinear, as files are decoded)."""
    grey = image.shape[-1] == 1
    if image.shape[0] == image.shape[1] == decoding.size and image.shape[-1] == decoding.channels:
        return image
    picture = Image.fromarray(image[..., 0] if grey else image)
    picture = picture.convert("L" if decoding.channels == 1 else "RGB")
    if picture.size != (decoding.size, decoding.size):
        picture = picture.resize((decoding.size, decoding.size), Image.Resampling.BILINEAR)
    array = np.asarray(picture)
    return array[..., None] if decoding.channels == 1 else array
