"""``medclass evaluate RUN --ood FOLDER``: how well a run's gate tells images it should not answer from the held-out
test split.

- Foreign image sets (a folder of images, or an experiment YAML whose data's test split is used): AUROC and the
  false-positive rate at 95% true-positive rate of the out-of-distribution score (pytorch-ood's ``OODMetrics``,
  foreign images as positives), and at the gate's own threshold the share of test images accepted, the share of
  foreign images flagged, their mean (detection accuracy, balanced) and the share the whole gate (score or quality)
  rejects.
- The data builder's degradations (blur, noise, JPEG, down-scaling, exposure, motion blur, at `data build`'s
  default strengths) applied to the test images: the share the quality check catches, and the whole gate.
- The clean test split: the share that passes each part of the gate.

Written to the run's ``ood/`` folder (ood.json, ood.md, ood.png) and as a section of report.html.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medclass.config import load_config
from medclass.config.build import DegradationRanges
from medclass.config.data import IMAGE_EXTENSIONS, check_split
from medclass.data import LabelledImages, load_dataset
from medclass.data.dataset import ImageSplit
from medclass.data.degrade import degrade
from medclass.data.files import is_image_file
from medclass.data.images import DECODE_ERRORS, image_dimensions, load_image
from medclass.data.quality import verdicts
from medclass.errors import UserError
from medclass.evaluation.gate import gate_features
from medclass.evaluation.report import refresh_gate_section
from medclass.io import atomic_write_json, atomic_write_text, save_figure
from medclass.models.gate import read_gate
from medclass.registry import DEGRADATIONS
from medclass.run_dir import RunDir
from medclass.training.restore import load_module

LIMIT = 2000  # images per set: enough for AUROC to +-0.01, and minutes not hours on a CPU


def evaluate_ood(
    run_dir: str | Path,
    foreign: list[str],
    checkpoint: str = "best",
    split: str = "test",
    dataset: LabelledImages | None = None,
    limit: int = LIMIT,
) -> dict[str, Any]:
    from pytorch_ood.metrics import OODMetrics

    for spec in foreign:  # before anything heavy
        path = Path(_named(spec)[1]).expanduser()
        if not (path.is_dir() or (path.is_file() and path.suffix.lower() in (".yaml", ".yml"))):
            raise UserError(f"--ood {spec}: give a folder of images or an experiment YAML file (NAME=PATH names it)")
    run = RunDir.open(run_dir)
    run.check_format()
    stored = read_gate(run.gate_dir(checkpoint), run.path)
    if stored is None:
        raise UserError(f"{run.path} has no gate for its {checkpoint} checkpoint; fit one with `medclass gate fit`")
    score, gate = stored
    config = run.load_config()
    dataset = dataset or load_dataset(config.data)
    check_split(split, dataset.splits)
    module, _ = load_module(config, dataset.task, dataset.classes, run.existing_checkpoint(checkpoint))
    device = torch.device("cpu")
    limits = gate["quality"]
    data = dataset.splits[split]
    rng = np.random.default_rng(config.seed)
    rows = np.arange(len(data)) if len(data) <= limit else np.sort(rng.choice(len(data), limit, replace=False))
    decode_size, resize = config.data.decoding()
    channels = data.images.shape[-1]

    def judged(split_data: ImageSplit, sides: list[int | None]) -> dict[str, np.ndarray]:
        features, measures = gate_features(module, split_data, np.arange(len(split_data)), device)
        ood = score(torch.from_numpy(features)).numpy()
        problems = verdicts(measures, sides, limits)
        return {"ood": ood, "quality_ok": np.array([not p for p in problems]),
                "problems": np.array(["; ".join(p) for p in problems], dtype=object)}  # fmt: skip

    clean_images = np.stack([data.image(int(i)) for i in rows])
    clean_sides = _split_sides(dataset, data, rows)
    clean = judged(ImageSplit(clean_images, np.zeros(len(rows), dtype=np.int64)), clean_sides)
    in_dist = clean["ood"] <= 1.0
    result: dict[str, Any] = {
        "split": split,
        "checkpoint": checkpoint,
        "images": len(rows),
        "gate": {"accept": gate["accept"], "detector": gate["detector"]},
        "clean": {
            "in_distribution": _share(in_dist),
            "quality_passed": _share(clean["quality_ok"]),
            "accepted": _share(in_dist & clean["quality_ok"]),
        },
        "foreign": [],
        "degraded": [],
    }
    histograms = {split: clean["ood"]}
    for spec in foreign:
        name, images, sides = _foreign_images(spec, decode_size, resize, channels, limit, config.seed)
        other = judged(ImageSplit(images, np.zeros(len(images), dtype=np.int64)), sides)
        metrics = OODMetrics()
        metrics.update(torch.from_numpy(clean["ood"]), torch.zeros(len(rows), dtype=torch.long))
        metrics.update(torch.from_numpy(other["ood"]), -torch.ones(len(images), dtype=torch.long))
        computed = metrics.compute()
        flagged = other["ood"] > 1.0
        result["foreign"].append({
            "name": name, "source": spec, "images": len(images),
            "auroc": round(float(computed["AUROC"]), 4), "fpr95": round(float(computed["FPR95TPR"]), 4),
            "test_accepted": _share(in_dist), "flagged": _share(flagged),
            "detection_accuracy": round((float(in_dist.mean()) + float(flagged.mean())) / 2, 4),
            "gate_rejected": _share(flagged | ~other["quality_ok"]),
        })  # fmt: skip
        histograms[name] = other["ood"]
    ranges = DegradationRanges()
    for name in DEGRADATIONS.known():
        step_rng = np.random.default_rng(config.seed)
        degraded = np.stack([_degraded(image, name, step_rng, ranges) for image in clean_images])
        other = judged(ImageSplit(degraded, np.zeros(len(rows), dtype=np.int64)), clean_sides)
        result["degraded"].append({
            "degradation": name, "images": len(rows),
            "quality_caught": _share(~other["quality_ok"]), "ood_flagged": _share(other["ood"] > 1.0),
            "gate_rejected": _share((other["ood"] > 1.0) | ~other["quality_ok"]),
        })  # fmt: skip
    folder = run.ood_dir(split, checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    result["files"] = {
        "json": str(folder / "ood.json"),
        "markdown": str(atomic_write_text(folder / "ood.md", ood_markdown(result, run.path))),
        "plot": str(save_figure(_plot(result, histograms), folder / "ood.png")),
    }
    atomic_write_json(folder / "ood.json", result)
    refresh_gate_section(run, split, checkpoint)
    return result


def _share(mask: np.ndarray) -> float:
    return round(float(np.mean(mask)), 4) if len(mask) else 0.0


def _split_sides(dataset: LabelledImages, data: ImageSplit, rows: np.ndarray) -> list[int | None]:
    if not data.files:
        return [min(data.images.shape[1:3])] * len(rows)
    root = Path(dataset.source.get("root", "."))
    sides: list[int | None] = []
    for i in rows:
        path = Path(data.files[int(i)])
        try:
            sides.append(min(image_dimensions(path if path.is_absolute() else root / path)))
        except (*DECODE_ERRORS, OSError):
            sides.append(None)
    return sides


def _degraded(image: np.ndarray, name: str, rng: np.random.Generator, ranges: DegradationRanges) -> np.ndarray:
    grey = image.shape[-1] == 1
    picture = Image.fromarray(image[..., 0] if grey else image)
    out, _ = degrade(picture, [name], rng, ranges)
    array = np.asarray(out.convert("L" if grey else "RGB"))
    return array[..., None] if grey else array


def _foreign_images(
    spec: str, size: int, resize: str, channels: int, limit: int, seed: int
) -> tuple[str, np.ndarray, list[int | None]]:
    """(name, uint8 (N, H, W, C) images decoded as predict decodes files, source shorter sides) of a folder or of
    the test split of an experiment YAML's data; ``NAME=PATH`` names the set."""
    name, spec = _named(spec)
    path = Path(spec).expanduser()
    rng = np.random.default_rng(seed)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        other = load_dataset(load_config(path).data)
        data = other.splits["test"]
        rows = np.arange(len(data)) if len(data) <= limit else np.sort(rng.choice(len(data), limit, replace=False))
        images = [_resized(data.image(int(i)), size, channels) for i in rows]
        return name or other.name, np.stack(images), _split_sides(other, data, rows)
    if not path.is_dir():
        raise UserError(f"--ood {spec}: give a folder of images or an experiment YAML file")
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p, set(IMAGE_EXTENSIONS)))
    if not files:
        raise UserError(f"--ood {spec}: the folder holds no image files")
    if len(files) > limit:
        files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
    images, sides = [], []
    for file in files:
        try:
            images.append(load_image(file, size, resize, channels))  # type: ignore[arg-type]
            sides.append(min(image_dimensions(file)))
        except DECODE_ERRORS:
            continue
    if not images:
        raise UserError(f"--ood {spec}: none of its {len(files)} image files could be read")
    return name or re.sub(r"[^A-Za-z0-9._-]+", "_", path.name) or "foreign", np.stack(images), sides


def _named(spec: str) -> tuple[str, str]:
    """NAME=PATH -> (NAME, PATH); a plain path -> ("", PATH)."""
    given, _, rest = spec.partition("=")
    return (given, rest) if rest and re.fullmatch(r"[A-Za-z0-9._-]+", given) else ("", spec)


def _resized(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    picture = picture.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(picture)
    return array[..., None] if channels == 1 else array


def ood_markdown(result: dict[str, Any], run_path: Path) -> str:
    clean = result["clean"]
    lines = [
        f"# The gate of {run_path}",
        "",
        f"{result['images']} images of the {result['split']} split ({result['checkpoint']} checkpoint); the gate lets "
        f"{result['gate']['accept']:.0%} of the validation images through by design.",
        "",
        f"Clean {result['split']} images: {clean['in_distribution']:.1%} look like the training images, "
        f"{clean['quality_passed']:.1%} pass the quality check, {clean['accepted']:.1%} are accepted.",
        "",
    ]
    if result["foreign"]:
        lines += [
            "## Foreign images",
            "",
            "| set | images | AUROC | FPR@95TPR | test accepted | foreign flagged | detection accuracy "
            "| gate rejects |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for f in result["foreign"]:
            lines.append(f"| {f['name']} | {f['images']} | {f['auroc']:.3f} | {f['fpr95']:.3f} | "
                         f"{f['test_accepted']:.1%} | {f['flagged']:.1%} | {f['detection_accuracy']:.3f} | "
                         f"{f['gate_rejected']:.1%} |")  # fmt: skip
        lines += ["", "AUROC and FPR@95TPR: the out-of-distribution score, foreign images as positives. Detection "
                  "accuracy: the mean of the test images accepted and the foreign images flagged at the gate's "
                  "threshold. Gate rejects: flagged by the score or failing the quality check.", ""]  # fmt: skip
    lines += [
        "## Degraded test images (the data builder's degradations, default strengths)",
        "",
        "| degradation | quality check catches | score flags | gate rejects |",
        "|---|---:|---:|---:|",
    ]
    for d in result["degraded"]:
        lines.append(
            f"| {d['degradation']} | {d['quality_caught']:.1%} | {d['ood_flagged']:.1%} | {d['gate_rejected']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], histograms: dict[str, np.ndarray]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    every = np.concatenate(list(histograms.values()))
    low, high = np.log10(max(float(every.min()), 1e-3)), np.log10(max(float(every.max()), 10.0))
    bins = np.logspace(low, high, 40)
    for name, values in histograms.items():
        left.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.55, label=f"{name} ({len(values)})",
                  density=True)  # fmt: skip
    left.axvline(1.0, color="black", linestyle="--", linewidth=1)
    left.text(1.05, left.get_ylim()[1] * 0.9, "threshold", fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("out-of-distribution score (1 = threshold)")
    left.set_ylabel("density")
    left.set_title("Out-of-distribution score")
    left.legend(fontsize=8)
    names = [d["degradation"] for d in result["degraded"]]
    x = np.arange(len(names))
    right.bar(x - 0.2, [d["quality_caught"] for d in result["degraded"]], 0.4, label="quality check")
    right.bar(x + 0.2, [d["gate_rejected"] for d in result["degraded"]], 0.4, label="whole gate")
    right.axhline(1 - result["clean"]["accepted"], color="grey", linestyle=":", linewidth=1,
                  label="clean images rejected")  # fmt: skip
    right.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    right.set_ylim(0, 1.18)
    right.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    right.set_ylabel("share rejected")
    right.set_title("Degraded test images")
    right.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    fig.tight_layout()
    return fig
