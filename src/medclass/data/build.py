"""`medclass data build`: merge several sources into target categories (with per-source caps) and synthesise a
LOW_QUALITY category by degrading images of the others, as the dermatology image-type project does.

The output is an image-folder dataset (``<output>/<category>/<file>``) plus ``manifest.csv`` saying where every
image came from (and, for synthetic images, which degradations with which parameters), and ``build.json`` with the
resolved recipe. Each file's ``group`` names its original image, so a degraded copy and its original can be kept
in one split (CSV source with ``group_column: group`` on the manifest). Degraded images are drawn first from
images the caps left unused, so by default no original appears both clean and degraded.

The folder is built under a temporary name and renamed when complete: an interrupted build leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medclass.config.build import BuildRecipe, BuildSource
from medclass.config.data import CsvData
from medclass.config.loading import apply_overrides, expand_path, read_yaml, validate_config
from medclass.data.degrade import degrade
from medclass.data.files import index_csv, walk_files
from medclass.data.images import DECODE_ERRORS
from medclass.errors import DataError
from medclass.io import atomic_write_json
from medclass.wording import file_slug

MANIFEST_COLUMNS = ("file", "category", "source", "original", "original_label", "group", "degradations")


@dataclass
class Candidate:
    path: Path
    source: str
    relative: str
    label: str | None

    @property
    def group(self) -> str:
        return f"{self.source}:{self.relative}"


@dataclass
class BuildResult:
    output: Path
    counts: dict[str, int]
    manifest: Path
    skipped: list[dict[str, str]] = field(default_factory=list)
    reused_for_low_quality: int = 0


def _slug(text: str) -> str:
    return file_slug(text, "x")


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> BuildRecipe:
    overrides = list(overrides)
    recipe = validate_config(apply_overrides(read_yaml(path), overrides), f"{path}", BuildRecipe)
    return _expand_recipe(recipe)


def _expand_recipe(recipe: BuildRecipe) -> BuildRecipe:
    categories = {}
    for name, sources in recipe.categories.items():
        categories[name] = [
            source.model_copy(
                update={
                    k: expand_path(getattr(source, k)) for k in ("folder", "csv", "image_dir") if getattr(source, k)
                }
            )
            for source in sources
        ]
    return recipe.model_copy(update={"output": expand_path(recipe.output), "categories": categories})


def list_source(source: BuildSource, extensions: tuple[str, ...], skipped: list[dict[str, str]]) -> list[Candidate]:
    """Every usable image a source offers, sorted, with its label where the source has one."""
    name = source.display_name
    if source.folder is not None:
        if not source.folder.is_dir():
            raise DataError(f"source {name}: folder {source.folder} does not exist")
        roots = [source.folder]
        if source.classes is not None:
            roots = [source.folder / c for c in source.classes]
            missing = [str(r) for r in roots if not r.is_dir()]
            if missing:
                raise DataError(f"source {name}: class folder(s) not found: {', '.join(missing)}")
        found = []
        for root in roots:
            for path in walk_files(root):
                relative = str(path.relative_to(source.folder))
                if path.suffix.lower() not in extensions:
                    skipped.append({"file": str(path), "reason": "not an image file"})
                    continue
                label = relative.split(os.sep)[0] if os.sep in relative else None
                found.append(Candidate(path, name, relative, label))
        return found
    assert source.csv is not None
    config = CsvData(
        csv=source.csv, image_dir=source.image_dir, image_column=source.image_column,
        label_column=source.label_column, image_suffix=source.image_suffix, extensions=extensions,
    )  # fmt: skip
    index = index_csv(config, source.csv, source.image_dir or source.csv.parent)
    skipped.extend(index.skipped)
    wanted = set(source.labels) if source.labels is not None else None
    if wanted is not None:
        unknown = wanted - set(index.classes)
        if unknown:
            raise DataError(f"source {name}: {source.csv} has no rows labelled {', '.join(sorted(unknown))}")
    return [
        Candidate(r.path, name, index.name_of(r.path), str(r.label))
        for r in index.records
        if wanted is None or r.label in wanted
    ]


def _sized(image: Image.Image, recipe: BuildRecipe) -> Image.Image:
    """The image at the recipe's output size: ``size`` x ``size`` (squashed; Lanczos down, bicubic up), or shrunk to
    ``max_side``, or as it is."""
    if recipe.size is not None:
        if image.size == (recipe.size, recipe.size):
            return image
        down = max(image.size) >= recipe.size
        return image.resize((recipe.size, recipe.size), Image.Resampling.LANCZOS if down else Image.Resampling.BICUBIC)
    if recipe.max_side is not None and max(image.size) > recipe.max_side:
        image = image.copy()
        image.thumbnail((recipe.max_side, recipe.max_side), Image.Resampling.LANCZOS)
    return image


def _copy(candidate: Candidate, destination: Path, recipe: BuildRecipe) -> None:
    """The file as it is when its size is already right, else re-encoded (in its own format) at the right size."""
    if recipe.size is None and recipe.max_side is None:
        shutil.copyfile(candidate.path, destination)
        return
    with Image.open(candidate.path) as image:
        image.load()
        sized = _sized(image, recipe)
        if sized is image:
            shutil.copyfile(candidate.path, destination)
        else:
            sized.save(destination)


def build_dataset(recipe: BuildRecipe) -> BuildResult:
    output = recipe.output
    if output.exists() and any(output.iterdir()) and not recipe.overwrite:
        raise DataError(f"output {output} exists and is not empty: choose another output or set overwrite: true")
    work = output.with_name(f".{output.name}.building-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(recipe.seed)
    skipped: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    chosen: dict[str, list[Candidate]] = {}
    unused: dict[str, list[Candidate]] = {}
    try:
        for category, sources in recipe.categories.items():
            (work / category).mkdir()
            chosen[category], unused[category] = [], []
            for source in sources:
                candidates = list_source(source, recipe.extensions, skipped)
                if not candidates:
                    raise DataError(f"category {category}: source {source.display_name} has no images")
                order = rng.permutation(len(candidates))
                cap = source.max_images or len(candidates)
                chosen[category] += [candidates[i] for i in order[:cap]]
                unused[category] += [candidates[i] for i in order[cap:]]
            names: set[str] = set()
            for candidate in chosen[category]:
                filename = _unique(f"{_slug(candidate.source)}__{_slug(candidate.relative)}", names)
                _copy(candidate, work / category / filename, recipe)
                rows.append(_row(f"{category}/{filename}", category, candidate, ""))
        reused = 0
        if recipe.low_quality is not None:
            reused = _synthesise(recipe, work, rng, chosen, unused, rows, skipped)
        _write_manifest(work / "manifest.csv", rows)
        counts = dict(Counter(row["category"] for row in rows))
        atomic_write_json(work / "build.json", {
            "recipe": json.loads(recipe.model_dump_json()), "counts": counts,
            "reused_for_low_quality": reused, "skipped": skipped,
        })  # fmt: skip
        if output.exists():
            shutil.rmtree(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(output, counts, output / "manifest.csv", skipped, reused)


def _unique(name: str, taken: set[str]) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{stem}_{n}{suffix}", n + 1
    taken.add(candidate)
    return candidate


def _row(file: str, category: str, candidate: Candidate, degradations: str) -> dict[str, Any]:
    return {
        "file": file, "category": category, "source": candidate.source, "original": str(candidate.path),
        "original_label": candidate.label or "", "group": candidate.group, "degradations": degradations,
    }  # fmt: skip


def _synthesise(
    recipe: BuildRecipe,
    work: Path,
    rng: np.random.Generator,
    chosen: dict[str, list[Candidate]],
    unused: dict[str, list[Candidate]],
    rows: list[dict[str, Any]],
    skipped: list[dict[str, str]],
) -> int:
    """Make the LOW_QUALITY images; returns how many came from images also used clean."""
    config = recipe.low_quality
    assert config is not None
    sources = config.from_categories or list(recipe.categories)
    quotas = [config.count // len(sources) + (1 if i < config.count % len(sources) else 0) for i in range(len(sources))]
    (work / config.name).mkdir()
    names: set[str] = set()
    reused = 0
    for category, quota in zip(sources, quotas, strict=True):
        fresh = [unused[category][i] for i in rng.permutation(len(unused[category]))]
        again = [chosen[category][i] for i in rng.permutation(len(chosen[category]))]
        pool = fresh + again
        made = 0
        for position, candidate in enumerate(pool):
            if made == quota:
                break
            try:
                with Image.open(candidate.path) as image:
                    image.load()
                    sized = _sized(image, recipe)
                    count = int(rng.integers(config.per_image[0], config.per_image[1] + 1))
                    steps_names = [str(n) for n in rng.choice(config.degradations, size=count, replace=False)]
                    degraded, steps = degrade(sized, steps_names, rng, config.ranges)
            except DECODE_ERRORS as exc:
                skipped.append({"file": str(candidate.path), "reason": f"unreadable, not degraded: {exc}"})
                continue
            filename = _unique(
                f"{_slug(category)}__{_slug(candidate.source)}__{_slug(Path(candidate.relative).stem)}.png",
                names,
            )
            degraded.save(work / config.name / filename)
            rows.append(_row(f"{config.name}/{filename}", config.name, candidate, json.dumps(steps)))
            reused += position >= len(fresh)
            made += 1
        if made < quota:
            raise DataError(
                f"low_quality: category {category} has only {made} readable images for {quota} degraded ones"
            )
    return reused


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
