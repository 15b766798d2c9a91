"""File sources: an image folder or images plus a label CSV, optionally fetched from Kaggle.

Both go the same way: index the files, assign splits (before decoding, so a damaged file never moves another
image to a different split), decode once into the cache, and leave out what could not be read, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medclass.config.data import SPLITS, CsvData, FileSourceFields, FolderData, is_dicom_keyword
from medclass.data.cache import DecodedImages, cache_root, decode_images, file_hashes, stored_near_pairs
from medclass.data.checks import NEAR_LIMIT, IdenticalImages, find_identical, find_near, label_names, with_near_keys
from medclass.data.dataset import ImageSplit, LabelledImages
from medclass.data.dicom import header_values
from medclass.data.files import FileIndex, index_csv, index_folder
from medclass.data.kaggle import download_kaggle
from medclass.data.privacy import group_key, group_secret
from medclass.data.sources import register_source
from medclass.data.splits import assign_splits, merge_groups
from medclass.errors import DataError


def _base(config: FileSourceFields) -> Path | None:
    return download_kaggle(config.kaggle) if config.kaggle else None


def _under(base: Path | None, path: Path) -> Path:
    return base / path if base is not None and not path.is_absolute() else path


def build_index(config: FolderData | CsvData) -> FileIndex:
    """The file index of a folder or CSV source (downloading from Kaggle first when asked)."""
    base = _base(config)
    if isinstance(config, FolderData):
        return index_folder(config, _under(base, config.root))
    csv_path = _under(base, config.csv)
    image_dir = _under(base, config.image_dir) if config.image_dir is not None else csv_path.parent
    return index_csv(config, csv_path, image_dir)


def label_arrays(index: FileIndex) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels as int64 class numbers (single-label) or float32 multi-hot rows, and the strata for splitting."""
    position = {name: i for i, name in enumerate(index.classes)}
    if index.multilabel:
        labels = np.zeros((len(index.records), len(index.classes)), dtype=np.float32)
        for row, record in enumerate(index.records):
            labels[row, [position[label] for label in record.label]] = 1.0
        return labels, None
    labels = np.array([position[record.label] for record in index.records], dtype=np.int64)
    return labels, labels


def record_hashes(index: FileIndex, config: FolderData | CsvData) -> list[str]:
    """MD5 of every record's file (remembered in the cache)."""
    return file_hashes([r.path for r in index.records], cache_root(config.cache_dir) if config.cache else None)


def split_index(
    index: FileIndex, config: FolderData | CsvData, hashes: list[str] | None = None, near: bool = False
) -> tuple[np.ndarray, str]:
    """The split of every record: as the data gives it, else seeded and stratified; images of one group (patient,
    lesion) and identical files (``hashes``: MD5s, computed when not given, or PreparedFiles.keys, which join
    near-duplicates too) are kept in one split."""
    _, strata = label_arrays(index)
    given = [r.group for r in index.records]
    group_name = getattr(config, "group_column", None) or "group"
    splits_given = [r.split for r in index.records]
    needs_split = None in splits_given or "val" not in splits_given
    if not (config.split.keep_duplicates_together and needs_split):
        hashes = None
    elif hashes is None:
        hashes = record_hashes(index, config)
    if hashes is not None:
        groups = merge_groups(given, hashes)
        copies = "identical and near-duplicate files" if near else "identical files"
        group_name = f"{group_name} and {copies}" if any(g is not None for g in given) else copies
    elif any(g is not None for g in given):
        groups = np.array([g if g is not None else f"<image {i}>" for i, g in enumerate(given)])
    else:
        groups = None
    return assign_splits(splits_given, strata, groups, config.split, index.classes, group_name)


@dataclass
class PreparedFiles:
    """A file source indexed and decoded, before the split: what the split and the checks need."""

    index: FileIndex
    labels: np.ndarray
    hashes: list[str]  # MD5 of each file
    decoded: DecodedImages
    usable: np.ndarray  # decoded without error
    near: list[list[int]]  # near-duplicate groups (record numbers), beyond identical files
    near_searched: bool
    keys: list[str]  # the MD5s with every near-duplicate group joined: grouping by key keeps copies together


def prepare_files(config: FolderData | CsvData) -> PreparedFiles:
    """Index, hash and decode every file. Decoding does not depend on the split, so it comes first: near-duplicates
    (perceptual hashes of the decoded images) are then kept in one split like identical files. A file that cannot
    be decoded has no hash and joins no group, so it never moves another image to another split."""
    index = build_index(config)
    labels, _ = label_arrays(index)
    hashes = record_hashes(index, config)
    decoded = decode_images(
        [r.path for r in index.records],
        config.input_size,
        config.resize,
        config.channels,
        cache_root(config.cache_dir) if config.cache else None,
        config.dicom.frame,
    )
    usable = np.ones(len(index.records), dtype=bool)
    usable[list(decoded.failures)] = False
    near, searched = _near_duplicates(decoded, usable, hashes)
    return PreparedFiles(index, labels, hashes, decoded, usable, near, searched, with_near_keys(hashes, near))


def near_cross_split(prepared: PreparedFiles, split: np.ndarray) -> list[list[str]]:
    """The near-duplicate groups that sit in more than one split, as "split:name"."""
    name = prepared.index.name_of
    return [[f"{split[i]}:{name(prepared.index.records[i].path)}" for i in group]
            for group in prepared.near if len({str(split[i]) for i in group}) > 1]  # fmt: skip


def load_files(config: FolderData | CsvData) -> LabelledImages:
    prepared = prepare_files(config)
    index, labels, hashes, decoded, usable = (prepared.index, prepared.labels, prepared.hashes, prepared.decoded,
                                              prepared.usable)  # fmt: skip
    split, how = split_index(index, config, prepared.keys, bool(prepared.near))
    skipped = [{"file": index.name_of(Path(entry["file"])), "reason": entry["reason"]} for entry in index.skipped]
    skipped += [
        {"file": index.name_of(index.records[i].path), "reason": reason}
        for i, reason in sorted(decoded.failures.items())
    ]
    if config.strict and skipped:
        first = skipped[0]
        raise DataError(
            f"{len(skipped)} file(s) cannot be used and data.strict is true; first: {first['file']}: {first['reason']}"
        )
    identical = _identical_files(index, labels, split, hashes, usable, config)
    identical.near_searched = prepared.near_searched
    identical.near_groups = len(prepared.near)
    identical.near_cross_split = near_cross_split(prepared, split)
    # Whole groups for cross-validation folds: the given group (patient, lesion), identical files and near-duplicates
    groups = merge_groups([r.group for r in index.records], prepared.keys)
    splits = {}
    for name in SPLITS:
        rows = np.flatnonzero((split == name) & usable)
        if len(rows) == 0:
            raise DataError(f"no readable images are left in the {name} split ({len(skipped)} file(s) skipped)")
        splits[name] = ImageSplit(
            images=decoded.images,
            labels=labels[rows],
            rows=rows,
            files=[index.name_of(index.records[i].path) for i in rows],
            groups=None if groups is None else groups[rows],
        )
    source = {
        "type": config.source,
        "root": str(index.base),
        "layout": index.layout,
        "kaggle": config.kaggle,
        "split": how,
        "images": len(index.records),
        "input_size": config.input_size,
        "resize": config.resize,
        "cache": str(decoded.path) if decoded.path else None,
    }
    source = {k: v for k, v in source.items() if v is not None}
    return LabelledImages(
        index.name, index.task, index.classes, splits, source=source, skipped=skipped, identical=identical,
        group_keys=_group_keys(index, config),
    )  # fmt: skip


def _near_duplicates(decoded: DecodedImages, usable: np.ndarray, hashes: list[str]) -> tuple[list[list[int]], bool]:
    """Groups of record numbers whose decoded images are near-duplicates (not merely identical files), and whether
    the search ran (not above NEAR_LIMIT images)."""
    rows = np.flatnonzero(usable)
    if len(rows) > NEAR_LIMIT or len(rows) < 2:
        return [], len(rows) <= NEAR_LIMIT
    store = decoded.path.with_suffix(".near.npy") if decoded.path is not None else None
    pairs = stored_near_pairs(lambda k: decoded.images[rows[k]], len(rows), decoded.images.shape[1], store)
    found, _ = find_near(pairs, [hashes[i] for i in rows], [str(i) for i in rows], ["-"] * len(rows))
    return [[int(rows[i]) for i in group] for group in found], True


def _group_keys(index: FileIndex, config: FolderData | CsvData) -> dict[str, str]:
    """File name -> keyed hash of its group id (no id itself ever leaves the index)."""
    if not any(r.group is not None for r in index.records):
        return {}
    secret = group_secret(cache_root(config.cache_dir))
    return {index.name_of(r.path): group_key(r.group, secret) for r in index.records if r.group is not None}


def file_attributes(config: FolderData | CsvData, files: list[str], names: list[str]) -> dict[str, list[str | None]]:
    """The values of ``names`` for each of ``files`` (names as a dataset's splits give them): a column of the label
    CSV, else a DICOM attribute keyword read from the file's header; None where the image has no value."""
    index = build_index(config)
    by_name = {index.name_of(r.path): r for r in index.records}
    columns = set(next((r.row for r in index.records if r.row is not None), {}) or {})
    for name in names:
        if name not in columns and not is_dicom_keyword(name):
            known = f"; the CSV has {', '.join(sorted(columns))}" if columns else ""
            raise DataError(f"{name!r} is neither a column of the label CSV nor a DICOM attribute keyword{known}")
    found: dict[str, list[str | None]] = {name: [] for name in names}
    from_headers = [name for name in names if name not in columns]
    for file in files:
        record = by_name.get(file)
        row = record.row if record is not None and record.row is not None else {}
        tags = header_values(record.path, from_headers) if record is not None and from_headers else {}
        for name in names:
            value = row.get(name) if name in columns else tags.get(name)
            value = value.strip() if isinstance(value, str) else value
            found[name].append(value or None)
    return found


def _identical_files(
    index: FileIndex, labels: np.ndarray, split: np.ndarray, hashes: list[str], usable: np.ndarray,
    config: FolderData | CsvData,
) -> IdenticalImages:  # fmt: skip
    """Identical usable files across splits or with different labels; conflicting labels stop the run unless
    data.allow_label_conflicts is set."""
    rows = np.flatnonzero(usable)
    identical = find_identical(
        [hashes[i] for i in rows],
        [index.name_of(index.records[i].path) for i in rows],
        [str(split[i]) for i in rows],
        label_names(labels[rows], index.classes),
    )
    if identical.conflicts and not config.allow_label_conflicts:
        listed = "; ".join(" = ".join(group) for group in identical.conflicts[:5])
        more = f" and {len(identical.conflicts) - 5} more" if len(identical.conflicts) > 5 else ""
        raise DataError(
            f"{len(identical.conflicts)} group(s) of identical image files carry different labels: {listed}{more}. "
            "Fix the labels (or remove the copies), or set data.allow_label_conflicts=true to train anyway"
        )
    return identical


@register_source("folder")
def load_folder(config: FolderData) -> LabelledImages:
    return load_files(config)


@register_source("csv")
def load_csv(config: CsvData) -> LabelledImages:
    return load_files(config)
