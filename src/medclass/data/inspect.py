"""`medclass data inspect`: look at a dataset before training on it.

Writes, into one folder: counts per class and split (``counts.png`` and the report), one sample grid per class
(``samples_<class>.png``), image sizes and modes, exact duplicate images (a warning when copies sit in different
splits: that is leakage), and the files that could not be read. ``report.json`` holds everything, ``report.md``
says it for people.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medclass.config.data import SPLITS, DataConfig, FileSourceFields, LoaderFields
from medclass.data.checks import NEAR_METHOD
from medclass.data.dicom import decode_bytes as dicom_decode_bytes
from medclass.data.dicom import looks_like_dicom
from medclass.data.images import DECODE_ERRORS
from medclass.data.sources import load_dataset
from medclass.data.sources.files import near_cross_split, prepare_files, split_index
from medclass.io import atomic_write_json, atomic_write_text, save_figure
from medclass.tasks import is_single_label
from medclass.wording import file_slug, wrap_class


@dataclass
class Inspection:
    name: str
    task: str
    layout: str
    split_method: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    sizes: dict[str, int]  # "WxH" -> images (the files' own sizes)
    modes: dict[str, int]
    duplicates: list[list[str]]  # groups of identical files ("split:file")
    cross_split_duplicates: list[list[str]]
    unreadable: list[dict[str, str]]
    skipped: list[dict[str, str]]
    near_duplicates: list[list[str]] = field(default_factory=list)  # near-duplicate groups (not identical files)
    cross_split_near_duplicates: list[list[str]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # what was written

    @property
    def warnings(self) -> list[str]:
        notes = []
        if self.cross_split_duplicates:
            notes.append(
                f"LEAKAGE: {len(self.cross_split_duplicates)} image(s) occur in more than one split "
                "(identical files); held-out numbers will be too good. Remove the copies."
            )
        if self.cross_split_near_duplicates:
            notes.append(
                f"NEAR-DUPLICATES: {len(self.cross_split_near_duplicates)} group(s) of near-identical images (resized "
                "or re-encoded copies) sit in more than one split; held-out numbers can be too good. Check and remove "
                "the copies (the split made here keeps such groups together; a given split is kept as it is)."
            )
        if self.unreadable:
            notes.append(f"{len(self.unreadable)} file(s) cannot be read and will be left out of training")
        other = len(self.skipped) - len(self.unreadable)
        if other > 0:
            notes.append(f"{other} file(s) are not usable images (see skipped in the report)")
        for split, per_class in self.counts.items():
            empty = [c for c, n in per_class.items() if n == 0]
            if empty:
                notes.append(f"{split} split has no images of: {', '.join(empty)}")
        return notes


def _file_facts(path: Path) -> tuple[str, str, str]:
    """(md5 of the bytes, 'WxH', mode) from the file itself; size and mode from the header only."""
    from PIL import Image

    try:
        digest = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - identity of bytes, not security
    except OSError:  # a symlink loop, a vanished or unreadable file: already counted as unreadable by the decoder
        return f"unreadable:{path}", "unreadable", "unreadable"
    try:
        if looks_like_dicom(path):
            width, height, mode, _ = dicom_decode_bytes(path)  # "DICOM L" / "DICOM RGB"
            return digest, f"{width}x{height}", mode
        with Image.open(path) as image:
            return digest, f"{image.width}x{image.height}", image.mode
    except DECODE_ERRORS:
        return digest, "unreadable", "unreadable"


def _duplicates(keys: list[str], names: list[str], splits: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_key[key].append(i)
    groups = [members for members in by_key.values() if len(members) > 1]
    described = [[f"{splits[i]}:{names[i]}" for i in members] for members in groups]
    crossing = [d for d, members in zip(described, groups, strict=True) if len({splits[i] for i in members}) > 1]
    return described, crossing


def inspect_dataset(config: DataConfig, out_dir: Path, samples_per_class: int = 16) -> Inspection:
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(config, FileSourceFields):
        inspection, samples = _inspect_files(config)
    else:  # MedMNIST and any registered source that loads arrays
        inspection, samples = _inspect_arrays(config)
    inspection.files["counts"] = str(plot_counts(inspection, out_dir / "counts.png"))
    for class_name, images in samples.items():
        picked = images[:samples_per_class]
        if picked:
            path = out_dir / f"samples_{file_slug(class_name, 'class')}.png"
            inspection.files[f"samples:{class_name}"] = str(plot_grid(picked, class_name, path))
    atomic_write_json(out_dir / "report.json", asdict(inspection) | {"warnings": inspection.warnings})
    atomic_write_text(out_dir / "report.md", report_markdown(inspection))
    inspection.files["report"] = str(out_dir / "report.md")
    return inspection


def _class_samples(labels: np.ndarray, classes: list[str], single_label: bool, limit: int = 16) -> dict[str, list[int]]:
    """Up to ``limit`` indices per class, spread evenly over the class's images (not just the first files)."""
    members: dict[str, list[int]] = {c: [] for c in classes}
    for i, label in enumerate(labels):
        names = [classes[int(label)]] if single_label else [c for c, on in zip(classes, label, strict=True) if on]
        for name in names:
            members[name].append(i)
    return {
        name: [rows[int(k)] for k in np.unique(np.linspace(0, len(rows) - 1, min(limit, len(rows))).round())]
        if rows
        else []
        for name, rows in members.items()
    }


def _inspect_arrays(config: LoaderFields) -> tuple[Inspection, dict[str, list[np.ndarray]]]:
    dataset = load_dataset(config)
    single = is_single_label(dataset.task)
    summary = dataset.summary()
    keys, names, splits = [], [], []
    samples: dict[str, list[np.ndarray]] = {c: [] for c in dataset.classes}
    for split_name, split in dataset.splits.items():
        array = split.array()
        keys += [hashlib.md5(image.tobytes()).hexdigest() for image in array]  # noqa: S324
        names += [f"#{i}" for i in range(len(array))]
        splits += [split_name] * len(array)
        if split_name == "train":
            for name, rows in _class_samples(split.labels, dataset.classes, single).items():
                samples[name] = [array[r] for r in rows]
    duplicates, crossing = _duplicates(keys, names, splits)
    height, width, channels = summary["image_shape"]
    layout = "MedMNIST npz" if config.source == "medmnist" else f"{config.source} source"
    inspection = Inspection(
        name=dataset.name, task=dataset.task, layout=layout, split_method=dataset.source.get("split", ""),
        classes=dataset.classes, counts={s: v["per_class"] for s, v in summary["splits"].items()},
        sizes={f"{width}x{height}": len(keys)}, modes={"L" if channels == 1 else "RGB": len(keys)},
        duplicates=duplicates, cross_split_duplicates=crossing, unreadable=[], skipped=[],
        cross_split_near_duplicates=dataset.identical.near_cross_split if dataset.identical is not None else [],
    )  # fmt: skip
    return inspection, samples


def _inspect_files(config: FileSourceFields) -> tuple[Inspection, dict[str, list[np.ndarray]]]:
    # Indexed, decoded and split exactly as for training (same cache entry, same groups), so the counts are the
    # training split's and the sample grids show what the model will see.
    prepared = prepare_files(config)  # type: ignore[arg-type]
    index, labels, decoded = prepared.index, prepared.labels, prepared.decoded
    split, how = split_index(index, config, prepared.keys, bool(prepared.near))  # type: ignore[arg-type]
    paths = [r.path for r in index.records]
    names = [index.name_of(p) for p in paths]
    facts = [_file_facts(p) for p in paths]
    duplicates, crossing = _duplicates([f[0] for f in facts], names, list(split))
    unreadable = [{"file": names[i], "reason": reason} for i, reason in sorted(decoded.failures.items())]
    single = not index.multilabel
    counts: dict[str, dict[str, int]] = {}
    for split_name in SPLITS:
        rows = np.flatnonzero(split == split_name)
        if single:
            per = Counter(int(v) for v in labels[rows])
            counts[split_name] = {c: per.get(i, 0) for i, c in enumerate(index.classes)}
        else:
            counts[split_name] = {c: int(labels[rows, i].sum()) for i, c in enumerate(index.classes)}
    usable = [i for i in range(len(paths)) if i not in decoded.failures]
    samples = {
        name: [decoded.images[usable[r]] for r in rows]
        for name, rows in _class_samples(labels[usable], index.classes, single).items()
    }
    inspection = Inspection(
        name=index.name, task=index.task,
        layout=index.layout, split_method=how, classes=index.classes, counts=counts,
        sizes=dict(Counter(f[1] for f in facts).most_common()), modes=dict(Counter(f[2] for f in facts).most_common()),
        duplicates=duplicates, cross_split_duplicates=crossing, unreadable=unreadable,
        skipped=[{"file": index.name_of(Path(s["file"])), "reason": s["reason"]} for s in index.skipped] + unreadable,
        near_duplicates=[[f"{split[i]}:{names[i]}" for i in g] for g in prepared.near],
        cross_split_near_duplicates=near_cross_split(prepared, split),
    )  # fmt: skip
    return inspection, samples


def plot_counts(inspection: Inspection, path: Path) -> Path:
    from matplotlib.figure import Figure  # a Figure object, no pyplot state

    classes = inspection.classes
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(inspection.counts))
    fig = Figure(figsize=(max(6.0, 0.9 * len(classes) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    for k, (split_name, per_class) in enumerate(inspection.counts.items()):
        values = [per_class.get(c, 0) for c in classes]
        bars = ax.bar(x + (k - (len(inspection.counts) - 1) / 2) * width, values, width, label=split_name)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, [wrap_class(c) for c in classes], rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylabel("images")
    ax.set_title(f"Images per class and split: {inspection.name}")
    ax.legend(title="split")
    return save_figure(fig, path, tight=False)


def plot_grid(images: list[np.ndarray], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    columns = min(8, len(images))
    rows = (len(images) + columns - 1) // columns
    fig = Figure(figsize=(1.6 * columns, 1.6 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                  vmin=0, vmax=255)  # fmt: skip
    fig.suptitle(title)
    return save_figure(fig, path, tight=False)


def report_markdown(inspection: Inspection) -> str:
    lines = [f"# {inspection.name}", "", f"- task: {inspection.task}", f"- layout: {inspection.layout}",
             f"- split: {inspection.split_method}", ""]  # fmt: skip
    splits = list(inspection.counts)
    lines += ["| class | " + " | ".join(splits) + " | total |", "|---|" + "---|" * (len(splits) + 1)]
    for c in inspection.classes:
        values = [inspection.counts[s].get(c, 0) for s in splits]
        lines.append(f"| {c} | " + " | ".join(map(str, values)) + f" | {sum(values)} |")
    totals = [sum(inspection.counts[s].values()) for s in splits]
    lines += ["| **total** | " + " | ".join(map(str, totals)) + f" | {sum(totals)} |", ""]
    lines.append(
        "Image sizes (width x height): " + ", ".join(f"{k} ({v})" for k, v in list(inspection.sizes.items())[:10])
    )
    lines.append("Modes: " + ", ".join(f"{k} ({v})" for k, v in inspection.modes.items()))
    lines.append(
        f"Exact duplicate groups: {len(inspection.duplicates)}; across splits: {len(inspection.cross_split_duplicates)}"
    )
    for group in inspection.cross_split_duplicates[:20]:
        lines.append(f"- leakage: {', '.join(group)}")
    lines.append(
        f"Near-duplicate groups (resized or re-encoded copies; {NEAR_METHOD}): {len(inspection.near_duplicates)}; "
        f"across splits: {len(inspection.cross_split_near_duplicates)}"
    )
    for group in inspection.cross_split_near_duplicates[:20]:
        lines.append(f"- near-duplicate leakage: {', '.join(group)}")
    lines.append(f"Skipped or unreadable files: {len(inspection.skipped)}")
    for entry in inspection.skipped[:50]:
        lines.append(f"- {entry['file']}: {entry['reason']}")
    if inspection.warnings:
        lines += ["", "## Warnings", *(f"- {w}" for w in inspection.warnings)]
    return "\n".join(lines) + "\n"
