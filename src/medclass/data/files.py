"""Index image files: an image folder (split or not) or a label CSV becomes a list of records with label, given
split and group. Nothing is decoded here; files that cannot be used are listed with the reason."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from medclass.config.data import CsvData, FolderData, is_dicom_keyword
from medclass.data.dicom import header_values, looks_like_dicom
from medclass.errors import DataError, suggest

log = logging.getLogger("medclass")

SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip


# What pandas would read as a missing value (its default NA strings, except "None", which can be a class name).
MISSING_LABELS = frozenset(
    v.lower() for v in ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null")
)  # fmt: skip


@dataclass
class ImageRecord:
    path: Path
    label: str | tuple[str, ...]
    split: str | None = None
    group: str | None = None
    row: dict[str, str] | None = None  # the label CSV's row of this image (its other columns: subgroups)


@dataclass
class FileIndex:
    """The usable image files of a source, relative names taken against ``base``."""

    base: Path
    records: list[ImageRecord]
    classes: list[str]
    multilabel: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)
    layout: str = ""
    name: str = ""

    @property
    def task(self) -> str:
        if self.multilabel:
            return "multilabel"
        return "binary" if len(self.classes) == 2 else "multiclass"

    def name_of(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.base))
        except ValueError:
            return str(path)


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def walk_files(folder: Path) -> list[Path]:
    """Every non-hidden file below ``folder``, sorted (os.walk is the fastest portable walk)."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(current) / f for f in files if not f.startswith("."))
    return sorted(found)


def is_image_file(path: Path, extensions: set[str]) -> bool:
    """An image by its ending, or a DICOM file without one (archives often name them IM0001)."""
    return path.suffix.lower() in extensions or (not path.suffix and looks_like_dicom(path))


def groups_from_headers(records: list[ImageRecord], keyword: str) -> None:
    """Set each record's group from the DICOM attribute ``keyword`` of its file (left unset where the file has none
    or is not DICOM: such an image is a group of its own, and the number of them is logged)."""
    for record in records:
        record.group = header_values(record.path, [keyword])[keyword]
    missing = sum(record.group is None for record in records)
    if records and missing == len(records):
        raise DataError(
            f"data.group_column {keyword}: none of the {len(records)} image files has this DICOM attribute (are "
            "they DICOM files?); give a CSV column, another keyword, or leave group_column out"
        )
    if missing:
        log.warning("%d of %d image files have no %s: each of them is a group of its own", missing, len(records),
                    keyword)  # fmt: skip


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))


def index_folder(config: FolderData, root: Path, whole: bool = False) -> FileIndex:
    """``whole``: every image is wanted, whatever split folder holds it (an external set): split folders need no
    train/ and their classes are pooled."""
    if not root.is_dir():
        raise DataError(f"data.root: folder {root} does not exist; give the folder that holds one folder per class")
    extensions = set(config.extensions)
    subfolders = {p.name.lower(): p for p in _class_folders(root)}
    split_folders = {SPLIT_NAMES[name]: path for name, path in subfolders.items() if name in SPLIT_NAMES}
    skipped: list[dict[str, str]] = []
    records: list[ImageRecord] = []

    def read_class_folders(parent: Path, split: str | None) -> list[str]:
        classes = []
        for entry in sorted(parent.iterdir()):
            if entry.is_file() and not _is_hidden(entry):
                skipped.append({"file": str(entry), "reason": "not inside a class folder"})
        for class_dir in _class_folders(parent):
            images = []
            for path in walk_files(class_dir):
                if is_image_file(path, extensions):
                    images.append(path)
                else:
                    skipped.append({"file": str(path), "reason": f"not an image file ({path.suffix or 'no ending'})"})
            if not images:
                raise DataError(
                    f"class folder {class_dir} has no images ({', '.join(sorted(extensions))}): add images or remove it"
                )
            records.extend(ImageRecord(path, class_dir.name, split) for path in images)
            classes.append(class_dir.name)
        return classes

    if split_folders and whole:
        others = sorted(set(subfolders) - set(SPLIT_NAMES))
        if others:
            raise DataError(f"{root} mixes split folders with other folders ({', '.join(others)}); use one layout")
        classes = sorted({c for split, folder in split_folders.items() for c in read_class_folders(folder, split)})
        if not classes:
            raise DataError(f"{root} has no class folders: put the images in {root}/<split>/<class>/")
        layout = f"pre-split folders ({', '.join(s for s in ('train', 'val', 'test') if s in split_folders)}), all used"
    elif split_folders:
        if "train" not in split_folders:
            raise DataError(f"{root} has {', '.join(sorted(split_folders))} folders but no train folder")
        others = sorted(set(subfolders) - set(SPLIT_NAMES))
        if others:
            raise DataError(f"{root} mixes split folders with other folders ({', '.join(others)}); use one layout")
        classes = read_class_folders(split_folders["train"], "train")
        if not classes:
            raise DataError(f"{split_folders['train']} has no class folders: put images in train/<class>/")
        for split in ("val", "test"):
            if split in split_folders:
                unseen = sorted(set(read_class_folders(split_folders[split], split)) - set(classes))
                if unseen:
                    raise DataError(
                        f"{split_folders[split]} has classes not seen in training: {', '.join(unseen)}; "
                        "add them to train/ or remove them"
                    )
        layout = f"pre-split folders ({', '.join(s for s in ('train', 'val', 'test') if s in split_folders)})"
    else:
        classes = read_class_folders(root, None)
        if not classes:
            raise DataError(f"{root} has no class folders: put the images in {root}/<class>/")
        layout = "class folders"
    if config.group_column:
        groups_from_headers(records, config.group_column)
    return FileIndex(root, records, sorted(classes), skipped=skipped, layout=layout, name=root.name)


def _read_csv(path: Path):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"data.csv: {path} not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"data.csv: {path} is not a readable CSV ({str(exc).splitlines()[0]})") from None


def _split_value(raw: str, where: str) -> str:
    split = SPLIT_NAMES.get(raw.strip().lower())
    if split is None:
        raise DataError(f"{where}: split value {raw!r} is not train, val or test")
    return split


def index_csv(config: CsvData, csv_path: Path, image_dir: Path) -> FileIndex:
    table = _read_csv(csv_path)
    columns = list(table.columns)
    group_from_headers = bool(config.group_column) and config.group_column not in columns
    for option in ("image_column", "label_column", "split_column", "group_column"):
        column = getattr(config, option)
        if option == "group_column" and group_from_headers and is_dicom_keyword(column):
            continue  # read from each DICOM file's header
        if column is not None and column not in columns:
            raise DataError(
                f"data.{option}: {csv_path} has no column {column!r}{suggest(column, columns)}; "
                f"it has {', '.join(columns)}"
                + (" (or give a DICOM attribute keyword such as PatientID)" if option == "group_column" else "")
            )
    if not image_dir.is_dir():
        raise DataError(f"data.image_dir: folder {image_dir} does not exist")
    on_disk = {str(p.relative_to(image_dir)): p for p in walk_files(image_dir)}
    stems: dict[str, Path] = {}
    for name, path in on_disk.items():
        if path.suffix.lower() in config.extensions:
            stems.setdefault(str(Path(name).with_suffix("")), path)
    pattern = re.compile(config.split_pattern) if config.split_pattern else None

    records, skipped = [], []
    missing_labels: list[int] = []
    for row_number, row in enumerate(table.to_dict("records"), start=2):
        name = row[config.image_column].strip()
        where = f"{csv_path} line {row_number}"
        if not name:
            skipped.append({"file": where, "reason": f"empty {config.image_column}"})
            continue
        if Path(name).suffix.lower() in config.extensions or name in on_disk:
            path = on_disk.get(name)
        elif config.image_suffix:
            path = on_disk.get(name + config.image_suffix)
        else:
            path = stems.get(name)
        if path is None:
            skipped.append({"file": str(image_dir / name), "reason": f"named in {where} but not found"})
            continue
        raw_label = row[config.label_column].strip()
        if raw_label.lower() in MISSING_LABELS:
            missing_labels.append(row_number)
            continue
        label: str | tuple[str, ...] = raw_label
        if config.label_separator:
            label = tuple(sorted({part.strip() for part in raw_label.split(config.label_separator) if part.strip()}))
        split = None
        if config.split_column:
            split = _split_value(row[config.split_column], where)
        elif pattern is not None:
            match = pattern.search(name)
            if match is None:
                raise DataError(f"data.split_pattern {config.split_pattern!r} does not match {name!r} ({where})")
            split = _split_value(match.groupdict().get("split") or match.group(1), where)
        group = row[config.group_column].strip() if config.group_column and not group_from_headers else None
        records.append(ImageRecord(path, label, split, group or None, row))

    if missing_labels:
        lines = ", ".join(map(str, missing_labels[:10])) + (" ..." if len(missing_labels) > 10 else "")
        raise DataError(
            f"{csv_path}: {len(missing_labels)} row(s) have an empty or missing {config.label_column!r} "
            f"(empty, NaN, NA, null) on line(s) {lines}: give every image a label, or remove those rows"
        )
    if not records:
        raise DataError(
            f"none of the {len(table)} rows of {csv_path} names an image found under {image_dir}: "
            f"check data.image_dir and data.image_column ({config.image_column})"
        )
    if group_from_headers:
        groups_from_headers(records, config.group_column)
    classes = _csv_classes(config, records, csv_path)
    return FileIndex(
        base=image_dir, records=records, classes=classes, multilabel=bool(config.label_separator), skipped=skipped,
        layout=f"label CSV {csv_path.name}", name=csv_path.parent.name,
    )  # fmt: skip


def _labels_of(record: ImageRecord) -> tuple[str, ...]:
    return record.label if isinstance(record.label, tuple) else (record.label,)


def _csv_classes(config: CsvData, records: list[ImageRecord], csv_path: Path) -> list[str]:
    every = sorted({label for r in records for label in _labels_of(r)})
    if config.classes is not None:
        unknown = sorted(set(every) - set(config.classes))
        if unknown:
            raise DataError(f"{csv_path} has labels that data.classes does not list: {', '.join(unknown)}")
        return list(config.classes)
    if any(r.split is not None for r in records):
        in_train = {label for r in records if r.split == "train" for label in _labels_of(r)}
        unseen = sorted(set(every) - in_train)
        if unseen:
            raise DataError(
                f"{csv_path}: labels {', '.join(unseen)} occur in val/test but never in train; "
                "a model cannot learn them: fix the labels or the split"
            )
    return every
