"""The preprocessing cache: images decoded and resized once into a memory-mapped uint8 ``.npy`` file, keyed by the
files (path, size, modification time) and the decoding settings, so later epochs and later runs skip decoding.

Decoding runs in parallel through a torch DataLoader's worker processes. The cache file appears only when it is
complete (written under a temporary name, then renamed), so an interrupted build is simply redone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from medclass.data.checks import near_pairs, perceptual_hashes
from medclass.data.dicom import FrameChoice
from medclass.data.images import DECODE_ERRORS, GREY_MODES, ResizeMode, header_mode, load_image
from medclass.io import atomic_write_json

CACHE_FORMAT_VERSION = 1


def cache_root(configured: Path | None = None) -> Path:
    """data.cache_dir, else $MEDCLASS_CACHE, else ~/.cache/medclass."""
    if configured is not None:
        return Path(configured)
    env = os.environ.get("MEDCLASS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medclass"


@dataclass
class DecodedImages:
    images: np.ndarray  # (N, size, size, C) uint8, memory-mapped when cached
    failures: dict[int, str]  # index -> why the file could not be decoded (its row is black)
    from_cache: bool
    path: Path | None


def files_fingerprint(paths: list[Path], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"version": CACHE_FORMAT_VERSION, **settings}, sort_keys=True).encode())
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:24]


class _Decode(Dataset):
    def __init__(self, paths: list[Path], size: int, resize: ResizeMode, channels: int, frame: FrameChoice) -> None:
        self.paths, self.size, self.resize, self.channels, self.frame = paths, size, resize, channels, frame

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            image = load_image(self.paths[index], self.size, self.resize, self.channels, dicom_frame=self.frame)
            return index, image, None
        except DECODE_ERRORS as exc:
            return index, None, f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _keep(item):
    return item


def _workers(n_images: int) -> int:
    return 0 if n_images < 256 else min(8, os.cpu_count() or 1)


def _is_grey(array: np.ndarray) -> bool:
    """R = G = B in every pixel of a (H, W, 3) image."""
    return np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])


class _Store:
    """The decoded images, (N, size, size, C) uint8: a temporary memory-mapped .npy beside the cache (renamed into
    place by :meth:`save`) or, without a cache, an array in memory. :meth:`widen` turns 1 stored channel into 3."""

    def __init__(self, n: int, size: int, channels: int, cache_dir: Path | None, key: str) -> None:
        self.cache_dir, self.key, self.tmp_path = cache_dir, key, None
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        self.images = self._allocate((n, size, size, channels))

    def _allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.cache_dir is None:
            return np.zeros(shape, dtype=np.uint8)
        self.tmp_path = self.cache_dir / f".images-{self.key}.{os.getpid()}.{shape[-1]}.tmp.npy"
        return np.lib.format.open_memmap(self.tmp_path, mode="w+", dtype=np.uint8, shape=shape)

    def widen(self) -> None:
        """Grey rows so far are repeated to 3 channels (exact: they were R = G = B)."""
        old, old_path = self.images, self.tmp_path
        self.images = self._allocate((*old.shape[:-1], 3))
        self.images[...] = old
        del old
        if old_path is not None:
            old_path.unlink()

    def save(self, path: Path) -> None:
        self.images.flush()
        self.channels = self.images.shape[-1]
        del self.images  # the map closes before the file is renamed
        os.replace(self.tmp_path, path)

    def discard(self) -> None:
        if self.tmp_path is not None and self.tmp_path.exists():
            self.tmp_path.unlink()


def choose_channels(paths: list[Path]) -> int:
    """1 when every readable file is grey (by its header), else 3."""
    for path in paths:
        try:
            if header_mode(path) not in GREY_MODES:
                return 3
        except DECODE_ERRORS:
            continue
    return 1


def decode_images(
    paths: list[Path],
    size: int,
    resize: ResizeMode,
    channels: int | str,
    cache_dir: Path | None,
    dicom_frame: FrameChoice = "middle",
) -> DecodedImages:
    """Decode ``paths`` to (N, size, size, C); read from / write to ``cache_dir`` unless it is None."""
    settings = {"size": size, "resize": resize, "channels": channels}
    if channels == "auto":  # auto now also finds grey content in colour files: older auto caches are not reused
        settings["auto"] = "content"
    if dicom_frame != "middle":  # the default leaves the keys of caches made before DICOM was read unchanged
        settings["dicom_frame"] = dicom_frame
    key = files_fingerprint(paths, settings)
    if cache_dir is None:
        return _decode(paths, size, resize, channels, None, key, settings, dicom_frame)
    # One build per key: a second process (a parallel cv fold, a Slurm array task, another test worker) waits for
    # the first and reads its file rather than decoding the same images again. The OS frees the lock of a killed
    # process, so a stale lock never blocks; a cache folder that cannot hold a lock (read-only) is read unlocked.
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(cache_dir / f".images-{key}.lock")
        lock.acquire()
    except OSError:
        return _decode(paths, size, resize, channels, cache_dir, key, settings, dicom_frame)
    try:
        return _decode(paths, size, resize, channels, cache_dir, key, settings, dicom_frame)
    finally:
        lock.release()


def _decode(
    paths: list[Path], size: int, resize: ResizeMode, channels: int | str, cache_dir: Path | None, key: str,
    settings: dict, dicom_frame: FrameChoice,
) -> DecodedImages:  # fmt: skip
    if cache_dir is not None:
        array_path, meta_path = cache_dir / f"images-{key}.npy", cache_dir / f"images-{key}.json"
        if array_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            images = np.load(array_path, mmap_mode="r")
            if len(images) == len(paths):
                failures = {int(k): v for k, v in meta["failures"].items()}
                return DecodedImages(images, failures, from_cache=True, path=array_path)

    n_channels = choose_channels(paths) if channels == "auto" else int(channels)
    # auto with colour headers: decode in colour but store one channel while every image so far is grey in content
    # (X-rays are often saved as RGB with R = G = B): the model gets the same input from a third of the bytes.
    grey_content = channels == "auto" and n_channels == 3
    store = _Store(len(paths), size, 1 if grey_content else n_channels, cache_dir, key)
    failures: dict[int, str] = {}
    # A DataLoader draws its workers' base seed from the global generator unless it has its own: decoding must
    # not shift what the model's initialisation draws next (a cold cache would otherwise give another model).
    loader = DataLoader(
        _Decode(paths, size, resize, n_channels, dicom_frame), batch_size=None, num_workers=_workers(len(paths)),
        collate_fn=_keep, generator=torch.Generator(),
    )  # fmt: skip
    try:
        for index, array, error in loader:
            if error is not None:
                failures[index] = error
                continue
            if grey_content and not _is_grey(array):
                grey_content = False
                store.widen()
            store.images[index] = array[..., :1] if grey_content else array
        if cache_dir is None:
            return DecodedImages(store.images, failures, from_cache=False, path=None)
        store.save(array_path)
    finally:
        store.discard()
    atomic_write_json(meta_path, {"version": CACHE_FORMAT_VERSION, "settings": settings, "n": len(paths),
                                  "channels": store.channels, "failures": failures})  # fmt: skip
    return DecodedImages(np.load(array_path, mmap_mode="r"), failures, from_cache=False, path=array_path)


def file_hashes(paths: list[Path], cache_dir: Path | None) -> list[str]:
    """MD5 of every file's bytes (exact-duplicate detection), remembered in the cache by path, size and mtime."""
    key = files_fingerprint(paths, {"kind": "md5"})
    stored = cache_dir / f"md5-{key}.json" if cache_dir is not None else None
    if stored is not None and stored.is_file():
        hashes = json.loads(stored.read_text())
        if len(hashes) == len(paths):
            return hashes
    hashes = []
    for path in paths:
        try:
            hashes.append(hashlib.md5(path.read_bytes()).hexdigest())  # noqa: S324 - identity, not security
        except OSError:
            hashes.append(f"<unreadable {path}>")
    if stored is not None:
        atomic_write_json(stored, hashes)
    return hashes


def stored_near_pairs(
    image: Callable[[int], np.ndarray], n: int, side: int, store: Path | None
) -> list[tuple[int, int]]:
    """Pairs (i, j) of near-duplicates among ``image(0..n-1)`` (see medclass.data.checks: perceptual hashes within a
    few bits), kept in ``store`` (.npy) for the next run over the same decoded images: hashing takes ~0.25 ms an
    image and the pairwise search ~3 s for 17,000 images, on every run that loads the data."""
    if store is not None and store.is_file():
        try:
            kept = np.load(store)
            if kept.ndim == 2 and kept.shape[1] == 2 and (len(kept) == 0 or int(kept.max()) < n):
                meta = store.with_suffix(".json")
                if meta.is_file() and json.loads(meta.read_text()).get("images") == n:
                    return [(int(i), int(j)) for i, j in kept]
        except (OSError, ValueError):
            pass
    pairs = near_pairs(perceptual_hashes((image(i) for i in range(n)), side))
    if store is not None:
        try:
            tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, np.array(pairs, dtype=np.int64).reshape(-1, 2))
            os.replace(tmp, store)
            atomic_write_json(store.with_suffix(".json"), {"images": n})
        except OSError:  # a read-only cache only costs the search next time
            pass
    return pairs
