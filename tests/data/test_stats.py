from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import folder_config

from medclass.data import load_dataset
from medclass.data.stats import compute_channel_stats, dataset_stats


def test_stats_are_the_training_split_pixel_moments(data_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(folder_config(data_dir / "brain_mri_4class").data)
    pixels = dataset.splits["train"].array().astype(np.float64) / 255
    stats = compute_channel_stats(dataset, chunk=37)
    assert stats["mean"] == pytest.approx(pixels.mean(axis=(0, 1, 2)).tolist(), abs=1e-5)
    assert stats["std"] == pytest.approx(pixels.std(axis=(0, 1, 2)).tolist(), abs=1e-5)
    everything = np.concatenate([s.array() for s in dataset.splits.values()]).astype(np.float64) / 255
    assert stats["mean"][0] != pytest.approx(everything.mean(), abs=1e-7), "val/test pixels must not be used"

    stored = dataset_stats(dataset, tmp_path)
    assert Path(stored["path"]).is_file()
    assert json.loads(Path(stored["path"]).read_text())["mean"] == stats["mean"]
    assert dataset_stats(dataset, tmp_path)["mean"] == stats["mean"]
