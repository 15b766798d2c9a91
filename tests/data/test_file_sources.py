"""Image-folder and CSV sources on the real shared data, the cache, and every bad input they can meet."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import folder_config
from PIL import Image

from medclass.config import load_config
from medclass.data import load_dataset
from medclass.data.cache import decode_images
from medclass.errors import DataError


def csv_config(csv: Path, image_dir: Path, *overrides: str, **data):
    fields = {"source": "csv", "csv": str(csv), "image_dir": str(image_dir), "input_size": 28, **data}
    return load_config(None, list(overrides), experiment="t", data=fields)


@pytest.fixture
def mri_copy(tmp_path: Path, data_dir: Path) -> Path:
    """A small unsplit class-folder dataset copied from the real brain MRI images (10 per class)."""
    root = tmp_path / "mri"
    for class_dir in sorted((data_dir / "brain_mri_4class").iterdir()):
        if class_dir.is_dir():
            (root / class_dir.name).mkdir(parents=True)
            for path in sorted(class_dir.iterdir())[:10]:
                shutil.copy(path, root / class_dir.name / path.name)
    return root


def test_unsplit_folder_is_split_80_10_10(data_dir: Path) -> None:
    dataset = load_dataset(folder_config(data_dir / "brain_mri_4class").data)
    assert dataset.classes == ["glioma", "meningioma", "notumor", "pituitary"] and dataset.task == "multiclass"
    sizes = {name: len(split) for name, split in dataset.splits.items()}
    assert sum(sizes.values()) == 400 and 300 <= sizes["train"] <= 340 and 30 <= sizes["test"] <= 50
    assert dataset.channels == 1
    assert dataset.skipped == [{"file": "MD5SUMS.txt", "reason": "not inside a class folder"}]
    files = {f for split in dataset.splits.values() for f in split.files}
    assert len(files) == 400, "every image is in exactly one split"
    # this set has exact duplicates (and near-duplicates): they must stay together
    assert "grouped by identical and near-duplicate files" in dataset.source["split"]


def test_pre_split_folder_keeps_test_and_carves_val(data_dir: Path) -> None:
    dataset = load_dataset(folder_config(data_dir / "chest_xray").data)
    assert dataset.classes == ["NORMAL", "PNEUMONIA"] and dataset.task == "binary"
    test = dataset.splits["test"]
    assert len(test) == 624 and all(f.startswith("test/") for f in test.files)
    assert np.bincount(test.labels).tolist() == [234, 390]
    assert len(dataset.splits["train"]) + len(dataset.splits["val"]) == 1341 + 3875
    assert all(f.startswith("train/") for f in dataset.splits["val"].files)
    assert dataset.channels == 1, "RGB JPEGs, but R = G = B in every one: stored as grey"


def test_csv_with_split_in_the_file_name(data_dir: Path) -> None:
    root = data_dir / "dermamnist_jpeg28"
    config = csv_config(root / "labels.csv", root / "images", label_column="dx", split_pattern="_(train|val|test)_")
    dataset = load_dataset(config.data)
    assert dataset.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert {n: len(s) for n, s in dataset.splits.items()} == {"train": 7007, "val": 1003, "test": 2005}
    assert dataset.splits["train"].image(0).shape == (28, 28, 3)
    assert dataset.source["split"] == "splits given by the data"


def test_csv_groups_stay_in_one_split(tmp_path: Path, data_dir: Path) -> None:
    root = data_dir / "dermamnist_jpeg28"
    rows = (root / "labels.csv").read_text().splitlines()[1:601]
    lines = ["image_id,dx,patient"] + [f"{r.split(',')[0]},{r.split(',')[1]},p{i // 3}" for i, r in enumerate(rows)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    dataset = load_dataset(csv_config(tmp_path / "labels.csv", root / "images", label_column="dx",
                                      group_column="patient", classes=None).data)  # fmt: skip
    patient_of = {line.split(",")[0] + ".jpg": line.split(",")[2] for line in lines[1:]}
    seen: dict[str, str] = {}
    for name, split in dataset.splits.items():
        for file in split.files:
            assert seen.setdefault(patient_of[file], name) == name, f"patient {patient_of[file]} crosses splits"
    assert "grouped by patient" in dataset.source["split"]


def test_cache_is_reused_and_invalidated(tmp_path: Path, mri_copy: Path) -> None:
    paths = sorted(mri_copy.rglob("*.jpg"))
    first = decode_images(paths, 32, "squash", "auto", tmp_path / "cache")
    second = decode_images(paths, 32, "squash", "auto", tmp_path / "cache")
    assert not first.from_cache and second.from_cache and isinstance(second.images, np.memmap)
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 1
    Image.new("L", (40, 40), 200).save(paths[0])  # a changed file means a new cache entry
    third = decode_images(paths, 32, "squash", "auto", tmp_path / "cache")
    assert not third.from_cache and third.images[0].mean() == pytest.approx(200, abs=1)


WAIT_THEN_DECODE = """
import sys, time
from pathlib import Path
from medclass.data.cache import decode_images
root, cache, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
(cache.parent / f"ready-{me}").touch()
while not (cache.parent / "go").exists():
    time.sleep(0.01)
decoded = decode_images(sorted(root.rglob("*.jpg"))[:300], 48, "squash", "auto", cache)
print("hit" if decoded.from_cache else "built")
"""


@pytest.mark.subprocess
def test_two_processes_decode_one_set_once(tmp_path: Path, data_dir: Path) -> None:
    """Two processes (parallel folds, array jobs) that ask for the same images at the same moment: the second waits
    for the first's cache file instead of decoding them again."""
    import subprocess
    import sys
    import time

    root, cache = data_dir / "brain_mri_4class", tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", WAIT_THEN_DECODE, str(root), str(cache), str(k)],
                              stdout=subprocess.PIPE, text=True) for k in range(2)]  # fmt: skip
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{k}").exists() for k in range(2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()  # both start decoding now
    outputs = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == ["built", "hit"]
    assert len(list(cache.glob("images-*.npy"))) == 1 and not list(cache.glob(".images-*.tmp.npy"))


def test_colour_files_with_grey_content_are_stored_grey(tmp_path: Path, data_dir: Path) -> None:
    """The chest X-rays are RGB JPEGs with R = G = B: auto stores them as one channel, the pixels channels=1 gives,
    and the model gets exactly the batch the three channels gave. One colour image among them (last, so the grey
    rows are already stored) makes all 3 channels again, the grey rows repeated exactly."""
    from medclass.data.cache import choose_channels
    from medclass.data.transforms import BatchPreprocess

    xrays = sorted((data_dir / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[:6]
    colour = data_dir / "dermamnist_jpeg28" / "images" / "DermaMNIST_train_00000.jpg"
    assert choose_channels(xrays) == 3, "their headers say RGB"
    preprocess = BatchPreprocess(3, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

    def model_input(images: np.ndarray) -> torch.Tensor:
        return preprocess(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2))

    for cache in (tmp_path / "cache", None):
        grey = decode_images(xrays, 32, "squash", "auto", cache)
        assert grey.images.shape == (6, 32, 32, 1)
        assert np.array_equal(grey.images, decode_images(xrays, 32, "squash", 1, cache).images)
        as_rgb = decode_images(xrays, 32, "squash", 3, cache).images
        assert torch.equal(model_input(grey.images), model_input(as_rgb))
        mixed = decode_images([*xrays, colour], 32, "squash", "auto", cache)
        assert mixed.images.shape == (7, 32, 32, 3)
        assert np.array_equal(mixed.images[:6], as_rgb)
        assert np.array_equal(mixed.images[6], decode_images([colour], 32, "squash", 3, None).images[0])
    kept = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]  # the build locks stay
    assert sorted(name.split("-")[0] for name in kept) == ["images"] * 8, "no temporary left"


def _damage(folder: Path) -> dict[str, str]:
    good = sorted(folder.iterdir())[0].read_bytes()
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "not_really.png").write_text("hello, I am text")
    (folder / "notes.txt").write_text("a note")
    return {
        "zero.jpg": "unreadable",
        "truncated.jpg": "unreadable",
        "not_really.png": "unreadable",
        "notes.txt": "not an image",
    }


def test_bad_files_are_skipped_with_names_and_reasons(mri_copy: Path) -> None:
    expected = _damage(mri_copy / "glioma")
    dataset = load_dataset(folder_config(mri_copy).data)
    reasons = {Path(s["file"]).name: s["reason"] for s in dataset.skipped}
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        assert reason in reasons[name]
    assert sum(len(s) for s in dataset.splits.values()) == 40


def test_strict_mode_stops_at_bad_files(mri_copy: Path) -> None:
    _damage(mri_copy / "glioma")
    with pytest.raises(DataError, match=r"4 file\(s\) cannot be used and data.strict is true"):
        load_dataset(folder_config(mri_copy, "data.strict=true").data)


def test_empty_class_folder(mri_copy: Path) -> None:
    (mri_copy / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty_class has no images"):
        load_dataset(folder_config(mri_copy).data)


def test_class_with_fewer_images_than_splits(mri_copy: Path) -> None:
    for path in sorted((mri_copy / "notumor").iterdir())[2:]:
        path.unlink()
    with pytest.raises(DataError, match=r"'notumor' has 2 image\(s\)"):
        load_dataset(folder_config(mri_copy).data)


def test_missing_root_and_test_class_unseen_in_training(tmp_path: Path, mri_copy: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(folder_config(tmp_path / "nowhere").data)
    split_root = tmp_path / "split"
    shutil.copytree(mri_copy, split_root / "train")
    shutil.copytree(mri_copy / "glioma", split_root / "test" / "glioma")
    shutil.copytree(mri_copy / "glioma", split_root / "test" / "astrocytoma")
    with pytest.raises(DataError, match="classes not seen in training: astrocytoma"):
        load_dataset(folder_config(split_root).data)


def test_csv_naming_missing_files(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "dermamnist_jpeg28" / "images"
    (tmp_path / "labels.csv").write_text(
        "image_id,dx\n" + "".join(f"DermaMNIST_train_{i:05d},{'nv' if i % 2 else 'mel'}\n" for i in range(60))
        + "ghost_1,nv\nghost_2,mel\n"
    )  # fmt: skip
    dataset = load_dataset(csv_config(tmp_path / "labels.csv", images, label_column="dx").data)
    missing = [s for s in dataset.skipped if "not found" in s["reason"]]
    assert len(missing) == 2 and {Path(m["file"]).name for m in missing} == {"ghost_1", "ghost_2"}
    with pytest.raises(DataError, match="data.strict"):
        load_dataset(csv_config(tmp_path / "labels.csv", images, "data.strict=true", label_column="dx").data)
    (tmp_path / "ghosts.csv").write_text("image_id,dx\nghost_1,nv\nghost_2,mel\n")
    with pytest.raises(DataError, match="none of the 2 rows .* names an image"):
        load_dataset(csv_config(tmp_path / "ghosts.csv", images, label_column="dx").data)


def test_csv_labels_not_seen_in_training(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "dermamnist_jpeg28" / "images"
    lines = [f"DermaMNIST_train_{i:05d},nv,train" for i in range(20)] + [
        f"DermaMNIST_test_{i:05d},vasc,test" for i in range(5)
    ]
    (tmp_path / "labels.csv").write_text("image_id,dx,fold\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match="labels vasc occur in val/test but never in train"):
        load_dataset(csv_config(tmp_path / "labels.csv", images, label_column="dx", split_column="fold").data)


def test_csv_wrong_column_and_bad_split_value(tmp_path: Path, data_dir: Path) -> None:
    root = data_dir / "dermamnist_jpeg28"
    with pytest.raises(DataError, match=r"no column 'dxx' \(did you mean dx"):
        load_dataset(csv_config(root / "labels.csv", root / "images", label_column="dxx").data)
    (tmp_path / "labels.csv").write_text("image_id,dx,fold\nDermaMNIST_train_00000,nv,holdout\n")
    with pytest.raises(DataError, match="split value 'holdout' is not train, val or test"):
        load_dataset(csv_config(tmp_path / "labels.csv", root / "images", label_column="dx", split_column="fold").data)


def test_multilabel_csv(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "dermamnist_jpeg28" / "images"
    lines = [f"DermaMNIST_train_{i:05d},{['nv', 'mel|dark', 'nv|dark'][i % 3]}" for i in range(90)]
    (tmp_path / "labels.csv").write_text("image_id,findings\n" + "\n".join(lines) + "\n")
    dataset = load_dataset(
        csv_config(tmp_path / "labels.csv", images, label_column="findings", label_separator="|").data
    )
    assert dataset.task == "multilabel" and dataset.classes == ["dark", "mel", "nv"]
    assert dataset.splits["train"].labels.shape[1] == 3 and dataset.splits["train"].labels.dtype == np.float32


def test_kaggle_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("KAGGLEHUB_CACHE", os.devnull + "-kaggle-cache")
    config = load_config(
        None, experiment="t", data={"source": "folder", "kaggle": "someone/chest-xray", "root": "data"}
    )
    with pytest.raises(DataError) as err:
        load_dataset(config.data)
    message = str(err.value)
    assert "\n" not in message and "someone/chest-xray" in message and "KAGGLE_KEY" in message


def test_png_from_bytes_in_a_csv_dataset_of_other_modes(tmp_path: Path, data_dir: Path) -> None:
    """A CSV dataset whose files come in mixed modes (RGBA, P, grey) decodes to one channel count."""
    rows = []
    for i, mode in enumerate(["RGBA", "P", "L", "RGB"] * 6):
        # different images: one image in 24 files would be one group of near-duplicates, which cannot be split
        source = Image.open(data_dir / "dermamnist_jpeg28" / "images" / f"DermaMNIST_train_{40 * i:05d}.jpg")
        buffer = io.BytesIO()
        source.convert("RGB").convert(mode).save(buffer, format="PNG")
        (tmp_path / f"img{i}.png").write_bytes(buffer.getvalue())
        rows.append(f"img{i}.png,{'a' if i % 2 else 'b'}")
    (tmp_path / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    dataset = load_dataset(csv_config(tmp_path / "labels.csv", tmp_path, image_column="file").data)
    assert dataset.channels == 3 and dataset.skipped == []


def test_csv_empty_and_nan_labels_are_errors_naming_the_rows(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "dermamnist_jpeg28" / "images"
    labels = ["nv", "mel"] * 20
    labels[4], labels[9], labels[17] = "NaN", "", "nan"
    lines = [f"DermaMNIST_train_{i:05d},{label}" for i, label in enumerate(labels)]
    (tmp_path / "labels.csv").write_text("image_id,dx\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"3 row\(s\) have an empty or missing 'dx' .* line\(s\) 6, 11, 19") as error:
        load_dataset(csv_config(tmp_path / "labels.csv", images, label_column="dx").data)
    assert "NaN" not in str(error.value).split("(")[0], "no class called NaN"


def test_csv_duplicate_ids_with_opposite_labels_are_conflicts(tmp_path: Path, data_dir: Path) -> None:
    images = data_dir / "dermamnist_jpeg28" / "images"
    lines = [f"DermaMNIST_train_{i:05d},{'nv' if i % 2 else 'mel'}" for i in range(60)]
    lines += [f"DermaMNIST_train_{i:05d},{'mel' if i % 2 else 'nv'}" for i in range(20)]  # 20 ids again, flipped
    (tmp_path / "labels.csv").write_text("image_id,dx\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"20 group\(s\) of identical image files carry different labels: .*"
                                        r"data.allow_label_conflicts=true"):  # fmt: skip
        load_dataset(csv_config(tmp_path / "labels.csv", images, label_column="dx").data)
    allowed = load_dataset(
        csv_config(tmp_path / "labels.csv", images, "data.allow_label_conflicts=true", label_column="dx").data
    )
    assert len(allowed.identical.conflicts) == 20 and allowed.identical.cross_split == []
    assert any(w.startswith("LABEL CONFLICT: 20 group(s)") for w in allowed.warnings)
    summary = allowed.summary()["checks"]
    assert summary["label_conflict_groups"] == 20 and len(summary["label_conflicts"]) == 20
