"""`data build`: real sources into categories with caps, a LOW_QUALITY class, and a manifest that explains it all."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import folder_config
from PIL import Image

from medclass.config.build import DegradationRanges
from medclass.data import load_dataset
from medclass.data.build import build_dataset, load_recipe
from medclass.data.degrade import DEGRADATIONS, degrade
from medclass.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


def recipe_file(tmp_path: Path, data_dir: Path, **extra) -> Path:
    recipe = {
        "output": str(tmp_path / "built"),
        "seed": 1,
        "max_side": 64,
        "categories": {
            "DERM": [{"csv": str(data_dir / "dermamnist_jpeg28/labels.csv"),
                      "image_dir": str(data_dir / "dermamnist_jpeg28/images"),
                      "label_column": "dx", "labels": ["mel", "nv"], "max_images": 20, "name": "derma"}],
            "XRAY": [{"folder": str(data_dir / "chest_xray/test"), "classes": ["NORMAL"], "max_images": 10},
                     {"folder": str(data_dir / "chest_xray/test"), "classes": ["PNEUMONIA"], "max_images": 10}],
            "MRI": [{"folder": str(data_dir / "brain_mri_4class"), "max_images": 20}],
        },
        "low_quality": {"count": 12, "per_image": [1, 2]},
        **extra,
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_build_writes_an_image_folder_with_manifest(tmp_path: Path, data_dir: Path) -> None:
    result = build_dataset(load_recipe(recipe_file(tmp_path, data_dir)))
    assert result.counts == {"DERM": 20, "XRAY": 20, "MRI": 20, "LOW_QUALITY": 12}
    with result.manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 72
    for row in rows:
        assert (result.output / row["file"]).is_file() and Path(row["original"]).is_file()
    derm = [r for r in rows if r["category"] == "DERM"]
    assert {r["original_label"] for r in derm} <= {"mel", "nv"}
    low = [r for r in rows if r["category"] == "LOW_QUALITY"]
    for row in low:
        steps = json.loads(row["degradations"])
        assert 1 <= len(steps) <= 2 and all(step["name"] in DEGRADATIONS for step in steps)
    assert {r["source"] for r in low} >= {"derma", "brain_mri_4class"}
    clean_groups = {r["group"] for r in rows if r["category"] != "LOW_QUALITY"}
    assert not clean_groups & {r["group"] for r in low}, "degraded images come from originals not kept clean"
    build = json.loads((result.output / "build.json").read_text())
    assert build["recipe"]["seed"] == 1 and build["counts"]["LOW_QUALITY"] == 12
    with Image.open(result.output / rows[-1]["file"]) as image:
        assert max(image.size) <= 64
    # the output is an image-folder dataset medclass can train on
    dataset = load_dataset(folder_config(result.output).data)
    assert dataset.classes == ["DERM", "LOW_QUALITY", "MRI", "XRAY"]
    assert {s["file"] for s in dataset.skipped} == {"build.json", "manifest.csv"}


def test_one_size_for_every_category_and_grey_stays_grey(tmp_path: Path, data_dir: Path) -> None:
    """Two shortcuts a quality classifier could learn instead of quality: the image size (DermaMNIST's 28 px
    against large X-rays) and colour noise on grey X-rays (per-channel noise on R = G = B images)."""
    low = {"count": 12, "per_image": [1, 1], "degradations": ["noise"], "from_categories": ["XRAY", "DERM"]}
    result = build_dataset(load_recipe(recipe_file(tmp_path, data_dir, size=48, max_side=None, low_quality=low)))
    with result.manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        with Image.open(result.output / row["file"]) as image:
            assert image.size == (48, 48), row["file"]
            pixels = np.asarray(image.convert("RGB")).astype(int)
        if row["category"] == "LOW_QUALITY" and "chest_xray" in row["original"]:
            assert (pixels == pixels[..., :1]).all(), f"{row['file']}: a grey X-ray got colour noise"
        if row["category"] == "LOW_QUALITY" and row["source"] == "derma":
            assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 0  # colour images keep their colour
    assert sum("chest_xray" in r["original"] for r in rows if r["category"] == "LOW_QUALITY") == 6


def test_same_seed_same_dataset(tmp_path: Path, data_dir: Path) -> None:
    first = build_dataset(load_recipe(recipe_file(tmp_path / "a", data_dir)))
    second = build_dataset(load_recipe(recipe_file(tmp_path / "b", data_dir)))
    assert first.manifest.read_text() == second.manifest.read_text()


def test_existing_output_and_bad_recipes(tmp_path: Path, data_dir: Path) -> None:
    path = recipe_file(tmp_path, data_dir)
    build_dataset(load_recipe(path))
    with pytest.raises(DataError, match="exists and is not empty"):
        build_dataset(load_recipe(path))
    build_dataset(load_recipe(path, ["overwrite=true"]))
    with pytest.raises(ConfigError, match="low_quality.from_categories names unknown categories: SKIN"):
        load_recipe(path, ["low_quality.from_categories=[SKIN]"])
    with pytest.raises(ConfigError, match="exactly one of folder or csv"):
        load_recipe(path, ["categories.MRI=[{max_images: 3}]"])
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(load_recipe(path, ["overwrite=true", "categories.MRI=[{folder: /nowhere}]"]))


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_each_degradation_changes_the_image(name: str, data_dir: Path) -> None:
    with Image.open(data_dir / "brain_mri_4class/glioma/Te-glTr_0000.jpg") as image:
        original = image.convert("RGB").resize((128, 128))
    degraded, steps = degrade(original, [name], np.random.default_rng(0), DegradationRanges())
    assert degraded.size == original.size and degraded.mode == "RGB"
    assert np.abs(np.asarray(degraded, float) - np.asarray(original, float)).mean() > 1.0
    assert steps[0]["name"] == name and len(steps[0]) > 1


def test_shipped_recipe_validates() -> None:
    recipe = load_recipe(REPO / "configs" / "build" / "image_types.yaml")
    assert set(recipe.categories) == {"DERM", "XRAY", "MRI"} and recipe.low_quality is not None
