"""One training epoch over chest_xray/train at 224 px: medclass's decoded-image cache against torchvision's
ImageFolder + PIL transforms, same model, same loop, same batch size and number of loader workers.

    python benchmarks/data_loading.py [--workers 2] [--model mobilenetv3_small_050] [--limit N]

Prints images/s of each pipeline and their ratio (cache / ImageFolder), plus the one-off cost of building the
cache. The default model is small so that the data pipeline, which is what differs, is visible in the timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import v2

from medclass.config.data import FolderData
from medclass.data.cache import decode_images
from medclass.data.dataset import ArrayDataset, ImageSplit
from medclass.data.files import index_folder
from medclass.data.sources.files import label_arrays
from medclass.data.transforms import BatchPreprocess, build_augmentation


def train_epoch(model: torch.nn.Module, loader: DataLoader, preprocess: torch.nn.Module | None) -> tuple[int, float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, time.perf_counter()
    for images, labels in loader:
        if preprocess is not None:
            images = preprocess(images)
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    return seen, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_root = Path(os.environ.get("MEDCLASS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--root", type=Path, default=data_root / "chest_xray" / "train")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="mobilenetv3_small_050")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (quick runs)")
    parser.add_argument("--augmentation", choices=["light", "none"], default="light", help="the same for both")
    args = parser.parse_args()
    torch.manual_seed(0)

    config = FolderData(root=args.root, input_size=args.size, resize="squash", channels=3)
    index = index_folder(config, args.root)
    records = index.records[: args.limit] if args.limit else index.records
    labels, _ = label_arrays(index)
    labels = labels[: len(records)]
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        decoded = decode_images([r.path for r in records], args.size, "squash", 3, Path(cache_dir))
        build_s = time.perf_counter() - start
        cached = DataLoader(
            ArrayDataset(ImageSplit(decoded.images, labels), build_augmentation(args.augmentation)),
            batch_size=args.batch_size, shuffle=True, num_workers=args.workers, persistent_workers=False,
        )  # fmt: skip
        model = timm.create_model(args.model, num_classes=len(index.classes))
        preprocess = BatchPreprocess(3, args.size, (0.5,) * 3, (0.5,) * 3)
        n_cache, t_cache = train_epoch(model, cached, preprocess)

    augment = (
        []
        if args.augmentation == "none"
        else [  # what medclass's "light" preset does
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        ]
    )
    folder = datasets.ImageFolder(
        str(args.root),
        transform=v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize((args.size, args.size), antialias=True),
                *augment,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize((0.5,) * 3, (0.5,) * 3),
            ]
        ),  # fmt: skip
        loader=lambda path: datasets.folder.pil_loader(path),
    )
    subset = Subset(folder, range(len(records))) if args.limit else folder
    plain = DataLoader(subset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=len(index.classes))
    n_plain, t_plain = train_epoch(model, plain, None)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"data: {args.root} ({n_cache} images), {args.size} px, batch {args.batch_size}, "
        f"{args.workers} workers, model {args.model}, augmentation {args.augmentation}"
    )
    print(f"cache build (once):          {build_s:7.1f} s  ({n_cache / build_s:6.1f} images/s)")
    print(f"epoch, medclass cache:       {t_cache:7.1f} s  ({n_cache / t_cache:6.1f} images/s)")
    print(f"epoch, ImageFolder + PIL:    {t_plain:7.1f} s  ({n_plain / t_plain:6.1f} images/s)")
    print(f"ratio (cache / ImageFolder): {(n_cache / t_cache) / (n_plain / t_plain):.2f}x images/s")


if __name__ == "__main__":
    main()
