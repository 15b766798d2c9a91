"""Memory needed to decode one large image, by PIL mode: medclass's ``load_image`` against the plain full-array
NumPy stretch (the usual way, and medclass's own code until issue 16), each measured in a fresh interpreter as the
peak RSS increase over the decode (Linux: /proc/self/clear_refs resets the peak after imports). Also checks that
``DECODE_BYTES_PER_PIXEL``, which the service uses to refuse an image from its header, is above what was measured.

    python benchmarks/decode_memory.py [--size 4000] [--out benchmarks/results/decode_memory.md]

Prints one line per mode and a ratio plain / medclass (how many times less memory medclass needs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

MEASURE = r"""
import sys, time
import numpy as np
from PIL import Image, ImageOps
from medclass.data.images import fit_square, load_image

Image.MAX_IMAGE_PIXELS = None

def plain(path, size):
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            array = np.asarray(image, dtype=np.float64)
            finite = np.isfinite(array)
            low, high = float(array[finite].min()), float(array[finite].max())
            array = np.nan_to_num(array, nan=low, posinf=high, neginf=low)
            scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
            image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
        else:
            image = image.convert("L" if image.mode in ("1", "L", "LA") else "RGB")
        return np.asarray(fit_square(image, size, "squash").convert("RGB"))

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

which, path, warm = sys.argv[1], sys.argv[2], sys.argv[3]
decode = load_image if which == "medclass" else plain
decode(warm, 224)  # imports and first-use allocations outside the window
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = status("VmRSS")
started = time.perf_counter()
decode(path, 224)
seconds = time.perf_counter() - started
print(status("VmHWM") - before, seconds)
"""


def make_images(folder: Path, n: int, modes: tuple[str, ...] | None = None) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (n, n), dtype=np.uint8)
    images = {
        "1": Image.fromarray(base, "L").convert("1"),
        "L": Image.fromarray(base, "L"),
        "LA": Image.fromarray(base, "L").convert("LA"),
        "P": Image.fromarray(base, "L").convert("P"),
        "RGB": Image.fromarray(np.stack([base] * 3, -1), "RGB"),
        "RGBA": Image.fromarray(np.stack([base] * 4, -1), "RGBA"),
        "CMYK": Image.fromarray(np.stack([base] * 4, -1), "RGBA").convert("CMYK"),
        "I;16": Image.fromarray(base.astype(np.uint16) * 257),
        "I": Image.fromarray(base.astype(np.int32) * 1000),
        "F": Image.fromarray(base.astype(np.float32) / 7),
    }
    paths = {}
    for mode, image in images.items():
        if modes is not None and mode not in modes:
            continue
        suffix = ".tif" if mode in ("I", "F", "CMYK") else ".png"
        paths[mode] = folder / f"{mode.replace(';', '')}{suffix}"
        image.save(paths[mode])
    Image.new("L", (8, 8)).save(folder / "warm.png")
    return paths


def measure(which: str, path: Path, warm: Path) -> tuple[int, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", MEASURE, which, str(path), str(warm)], capture_output=True,
                          text=True, check=True, env=env)  # fmt: skip
    peak, seconds = done.stdout.split()
    return int(peak), float(seconds)


def main() -> None:
    from medclass.data.images import _DECODE_OVERHEAD, DECODE_BYTES_PER_PIXEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4000, help="side of the square test images (pixels)")
    parser.add_argument("--out", type=Path, help="write a Markdown table here")
    args = parser.parse_args()
    pixels = args.size**2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.size)
        for mode, path in paths.items():
            plain, plain_s = measure("plain", path, Path(tmp) / "warm.png")
            ours, ours_s = measure("medclass", path, Path(tmp) / "warm.png")
            table = DECODE_BYTES_PER_PIXEL[mode]
            estimate = table * pixels + _DECODE_OVERHEAD  # what decode_bytes() charges
            rows.append((mode, plain / pixels, ours / pixels, table, plain / ours, plain_s, ours_s))
            print(f"decode {mode:5s}: plain {plain / pixels:5.1f} B/px {plain_s:5.2f} s | medclass "
                  f"{ours / pixels:5.1f} B/px {ours_s:5.2f} s | table {table} | ratio plain / medclass "
                  f"{plain / ours:4.1f}{'' if ours <= estimate else '  (ABOVE THE ESTIMATE)'}")  # fmt: skip
    if args.out:
        lines = [
            "# Decode memory by image mode",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"{datetime.date.today()}; {args.size}x{args.size} images; command: "
            f"`python benchmarks/decode_memory.py --size {args.size} --out {args.out}`.",
            "",
            "Peak RSS increase of one decode to 224 px, in a fresh interpreter, per pixel. *plain*: the whole image "
            "as float64 NumPy (medclass before issue 16); *medclass*: `load_image` (no copy for L/RGB, in-place "
            "EXIF turn, 16-bit and float images stretched a strip of rows at a time). *table*: "
            "`DECODE_BYTES_PER_PIXEL`, what the service charges an image before decoding it (plus 16 MiB for the "
            "strips, the decoder's buffers and the resized copy).",
            "",
            "| mode | plain B/px | medclass B/px | table B/px | plain / medclass | plain s | medclass s |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {p:.1f} | {o:.1f} | {t} | {r:.1f} | {ps:.2f} | {os_:.2f} |" for m, p, o, t, r, ps, os_ in rows
        ]
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
