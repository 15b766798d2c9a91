"""The data path alone: training images/s delivered to the loop (no model) by medclass (its decoded-image cache,
the DataModule's training loader, the same augmentation, then the batch preprocessing to normalised floats) against
torchvision ImageFolder + PIL + the same torchvision transforms, at 224 px, for each number of loader workers. Both
deliver what a model with --in-chans input channels takes (3, the default of medclass and of pretrained models:
ImageFolder's own loader, RGB; 1: both read grey).

    python benchmarks/data_path.py [--data brain_mri_4class chest_xray] [--workers 0 2] [--size 224] [--epochs 2]
                                   [--in-chans 3]

Both sides run alternately in one process; each figure is the best of --epochs passes over the training split.
The cache is built once before the timing (its cost is printed: a first run pays it, later runs and every later
epoch do not). Printed per data set and worker count: `loader-only R x`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]


def medclass_loader(root: Path, size: int, workers: int, batch: int, augmentation: str, in_chans: int):
    from medclass.config import load_config
    from medclass.data import ClassificationDataModule, load_dataset
    from medclass.data.transforms import BatchPreprocess

    config = load_config(
        None,
        [f"data.input_size={size}", f"data.num_workers={workers}", f"data.batch_size={batch}",
         f"data.augmentation={augmentation}"],
        experiment="bench", data={"source": "folder", "root": str(root)},
    )  # fmt: skip
    started = time.perf_counter()
    dataset = load_dataset(config.data)  # builds (or reads) the cache
    load_s = time.perf_counter() - started
    module = ClassificationDataModule(dataset, config.data, seed=0)
    preprocess = BatchPreprocess(in_chans, size, (0.5,) * in_chans, (0.5,) * in_chans)

    loader = module.train_dataloader()  # once, as Lightning does: its workers persist between epochs

    def epoch() -> int:
        seen = 0
        for batch_ in loader:
            images, labels = module.on_after_batch_transfer(batch_, 0)
            preprocess(images)
            seen += len(labels)
        return seen

    return epoch, load_s, len(dataset.splits["train"]), dataset.channels


def folder_loader(root: Path, size: int, workers: int, batch: int, channels: int, files: int, augmentation: str):
    folder = datasets.ImageFolder(
        str(root / "train") if (root / "train").is_dir() else str(root),
        **({"loader": lambda path: datasets.folder.pil_loader(path).convert("L")} if channels == 1 else {}),
        transform=v2.Compose([
            v2.PILToTensor(),
            v2.Resize((size, size), antialias=True),
            *([v2.RandomHorizontalFlip(),  # what medclass's "light" preset does
               v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05))]
              if augmentation == "light" else []),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.5,) * channels, (0.5,) * channels),
        ]),
    )  # fmt: skip
    subset = torch.utils.data.Subset(folder, range(min(files, len(folder))))
    loader = DataLoader(subset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)

    def epoch() -> int:
        return sum(len(labels) for _, labels in loader)

    return epoch


def timed(epoch) -> float:
    started = time.perf_counter()
    seen = epoch()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["brain_mri_4class", "chest_xray"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--augmentation", nargs="+", choices=["light", "none"], default=["light", "none"])
    parser.add_argument("--in-chans", type=int, choices=[1, 3], default=3, help="channels the model takes")
    args = parser.parse_args()
    data = Path(os.environ.get("MEDCLASS_DATA", REPO.parent / "shared" / "data"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.size} px, batch {args.batch_size}, "
          f"best of {args.epochs} epochs, {args.in_chans}-channel model input")  # fmt: skip
    for augmentation in args.augmentation:
        for name in args.data:
            for workers in args.workers:
                ours, load_s, n, stored = medclass_loader(data / name, args.size, workers, args.batch_size,
                                                          augmentation, args.in_chans)  # fmt: skip
                theirs = folder_loader(data / name, args.size, workers, args.batch_size, args.in_chans, n, augmentation)
                rates: dict[str, list[float]] = {"medclass": [], "folder": []}
                for _ in range(args.epochs):
                    rates["medclass"].append(timed(ours))
                    rates["folder"].append(timed(theirs))
                a, b = max(rates["medclass"]), max(rates["folder"])
                where = f"{name}, {workers} workers, augmentation {augmentation}"
                print(f"{where}: medclass {a:8.1f} images/s ({stored}-channel cache, load {load_s:.1f} s), "
                      f"ImageFolder + PIL "
                      f"{b:7.1f} images/s ({n} training images)")  # fmt: skip
                print(f"loader-only {a / b:.1f}x ({where})", flush=True)


if __name__ == "__main__":
    main()
