"""MedMNIST source: the official ``<flag>.npz`` / ``<flag>_<size>.npz`` files, any 2D flag at any size.

Task type and class names come from the medmnist package's metadata (``medmnist.INFO``); a missing file is
downloaded through the medmnist package (from Zenodo), and when that fails the error names the file and where to put it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from medclass.config.data import SPLITS, MedMNISTData
from medclass.data.cache import cache_root, files_fingerprint, stored_near_pairs
from medclass.data.checks import NEAR_LIMIT, find_identical, find_near, label_names, pixel_hashes, with_near_keys
from medclass.data.dataset import ImageSplit, LabelledImages
from medclass.data.sources import register_source
from medclass.data.splits import merge_groups
from medclass.errors import ConfigError, DataError, suggest
from medclass.io import atomic_write_json
from medclass.tasks import Task

MEDMNIST_TASKS: dict[str, Task] = {
    "binary-class": "binary",
    "multi-class": "multiclass",
    "multi-label, binary-class": "multilabel",
    "ordinal-regression": "ordinal",
}


def medmnist_info(flag: str) -> dict:
    """The medmnist package's metadata for a 2D flag; unknown or 3D flags are a :class:`ConfigError`."""
    from medmnist import INFO

    key = flag.lower()
    if key not in INFO:
        flags_2d = [f for f in INFO if not f.endswith("3d")]
        raise ConfigError(
            f"data.flag: {flag!r} is not a MedMNIST dataset{suggest(key, flags_2d)}; "
            f"known 2D flags: {', '.join(flags_2d)}"
        )
    if key.endswith("3d"):
        raise ConfigError(f"data.flag: {flag!r} is a 3D MedMNIST dataset; medclass trains 2D image classifiers only")
    return INFO[key]


def default_root() -> Path:
    """Where npz files are looked for when data.root is not set: $MEDCLASS_DATA (its medmnist/ subfolder if it has
    one), else the medmnist package's default folder."""
    env = os.environ.get("MEDCLASS_DATA")
    if env:
        base = Path(env).expanduser()
        return base / "medmnist" if (base / "medmnist").is_dir() else base
    return package_root()


def npz_filenames(flag: str, size: int) -> list[str]:
    """File names MedMNIST uses for a flag and size (28 px files have no size suffix)."""
    return [f"{flag}.npz", f"{flag}_28.npz"] if size == 28 else [f"{flag}_{size}.npz"]


def package_root() -> Path:
    """The medmnist package's own folder (~/.medmnist): where a file found nowhere else is downloaded to."""
    from medmnist.info import DEFAULT_ROOT

    # None when medmnist could not create it (a home folder the user cannot write): the path it would have used
    return Path(DEFAULT_ROOT or "~/.medmnist").expanduser()


def find_or_download(flag: str, size: int, root: Path, download: bool, target: Path | None = None) -> Path:
    """The npz file from ``root`` (or ``target``), else downloaded into ``target`` (default ``root``). Without an
    explicit data.root, ``root`` is $MEDCLASS_DATA, often a shared read-only collection: downloads then go to the
    user's own medmnist folder, and the hint points there rather than into the shared one."""
    target = root if target is None else target
    names = npz_filenames(flag, size)
    for folder in dict.fromkeys((root, target)):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    wanted = target / names[0]
    info = medmnist_info(flag)
    url = info["url" if size == 28 else f"url_{size}"].split("?")[0]
    where = f"put it at {wanted} (or set data.root to the folder that holds it)"
    if not download:
        raise DataError(f"{wanted} not found and data.download is false: download {url} and {where}")
    reason = _download(flag, size, target)
    if reason is not None or not wanted.is_file():
        raise DataError(
            f"{wanted} not found and downloading it failed ({reason or 'no file'}): download {url} and {where}"
        )
    return wanted


def _download(flag: str, size: int, root: Path) -> str | None:
    """Download through the medmnist package; returns why it failed, or None."""
    import medmnist

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {root}: {exc.strerror}"
    dataset_class = getattr(medmnist, medmnist_info(flag)["python_class"])
    output = io.StringIO()
    try:
        # The medmnist package prints progress and, on failure, a long multi-line help text; we keep one line.
        with contextlib.redirect_stdout(output):
            dataset_class(split="train", root=str(root), size=size, download=True)
    except Exception as exc:  # noqa: BLE001 - medmnist wraps every download failure in a bare RuntimeError
        cause = exc.__context__ or exc
        first_line = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
        return f"no network? {type(cause).__name__}: {first_line}"
    return None


def read_npz(path: Path, multilabel: bool) -> dict[str, ImageSplit]:
    """Read the six arrays of a MedMNIST npz; a damaged or foreign file is a :class:`DataError`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
            if missing:
                raise DataError(f"{path} is not a MedMNIST npz: it has no {', '.join(missing)} array(s)")
            arrays = {name: npz[name] for name in npz.files}
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise DataError(
            f"{path} is damaged or not an npz file ({type(exc).__name__}: {exc}): delete it and download it again"
        ) from None
    splits = {}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(
                f"{path}: {split}_images should be uint8 (N, H, W[, C]), found {images.dtype} {images.shape}"
            )
        if images.ndim == 3:
            images = images[..., None]
        labels = labels.reshape(len(labels), -1)
        labels = labels.astype(np.float32) if multilabel else labels[:, 0].astype(np.int64)
        try:
            splits[split] = ImageSplit(images=images, labels=labels)
        except ValueError as exc:
            raise DataError(f"{path}: {split} split: {exc}") from None
    return splits


def npz_pixel_hashes(path: Path, splits: dict[str, ImageSplit]) -> list[str]:
    """MD5 of every image's pixels, split after split, remembered in the cache by the npz file's path, size and
    modification time (hashing a 224 px MedMNIST file takes tens of seconds)."""
    stored = cache_root() / f"pixel-md5-{files_fingerprint([path], {'kind': 'pixel-md5'})}.json"
    n = sum(len(split) for split in splits.values())
    if stored.is_file():
        with contextlib.suppress(OSError, ValueError):
            hashes = json.loads(stored.read_text())
            if len(hashes) == n:
                return hashes
    hashes = [h for split in splits.values() for h in pixel_hashes(split.images)]
    with contextlib.suppress(OSError):  # a read-only cache only costs the hashing next time
        stored.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(stored, hashes)
    return hashes


@register_source("medmnist")
def load_medmnist(config: MedMNISTData) -> LabelledImages:
    flag = config.flag.lower()
    info = medmnist_info(flag)
    task = MEDMNIST_TASKS[info["task"]]
    if config.root is not None:
        path = find_or_download(flag, config.size, config.root, config.download)
    else:
        path = find_or_download(flag, config.size, default_root(), config.download, target=package_root())
    splits = read_npz(path, multilabel=task == "multilabel")
    classes = [info["label"][str(i)] for i in range(len(info["label"]))]
    for name, split in splits.items():
        if task != "multilabel" and len(split) and (split.labels.min() < 0 or split.labels.max() >= len(classes)):
            raise DataError(f"{path}: {name} labels outside 0..{len(classes) - 1}; is this the {flag} file?")
    keys, names, split_names, labels = npz_pixel_hashes(path, splits), [], [], []
    for name, split in splits.items():
        names += [f"{name}_images[{i}]" for i in range(len(split))]
        split_names += [name] * len(split)
        labels += label_names(split.labels, classes)
    # The official split is the benchmark and is kept as published: its identical images are reported, not fixed.
    identical = find_identical(keys, names, split_names, labels, published=True)
    near: list[list[int]] = []
    identical.near_searched = len(keys) <= NEAR_LIMIT
    if identical.near_searched:
        store = cache_root() / f"near-{files_fingerprint([path], {'kind': 'near-phash'})}.npy"
        where = [(split, i) for split in splits.values() for i in range(len(split))]
        pairs = stored_near_pairs(lambda k: where[k][0].image(where[k][1]), len(where), config.size, store)
        near, identical.near_cross_split = find_near(pairs, keys, names, split_names)
        identical.near_groups = len(near)
    # identical pixels and near-duplicates: one group each (cross-validation folds keep them whole)
    groups, start = merge_groups([None] * len(keys), with_near_keys(keys, near)), 0
    if groups is not None:
        for name, split in list(splits.items()):
            splits[name] = dataclasses.replace(split, groups=groups[start : start + len(split)])
            start += len(split)
    return LabelledImages(
        identical=identical,
        name=f"{flag}" if config.size == 28 else f"{flag}_{config.size}",
        task=task,
        classes=classes,
        splits=splits,
        source={
            "type": "medmnist",
            "flag": flag,
            "size": config.size,
            "root": str(path.parent.absolute()),
            "file": str(path.absolute()),
            "license": info["license"],
            "split": "official MedMNIST split",
        },
    )
