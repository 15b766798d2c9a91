"""Model packages, prediction on real image files, ONNX export checked against PyTorch, heatmaps, the MLflow
registry, and the bad model files and images a user can hand to these commands."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import medclass
from PIL import Image

from medclass import load_config
from medclass.errors import ModelError, UserError
from medclass.inference.package import load_package, package_from_run
from medclass.inference.predictor import load_predictor, predict_files
from medclass.training.restore import load_module

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def blood_images(tmp_path_factory: pytest.TempPathFactory, medmnist_dir: Path) -> tuple[Path, np.ndarray]:
    """Eight real BloodMNIST test images written as PNG files, plus a truncated PNG and a text file."""
    folder = tmp_path_factory.mktemp("images")
    images = np.load(medmnist_dir / "bloodmnist.npz")["test_images"][:8]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"cell_{i}.png")
    (folder / "broken.png").write_bytes((folder / "cell_0.png").read_bytes()[:120])
    (folder / "notes.png").write_text("not an image")
    return folder, images


def test_package_is_json_and_safetensors_and_reproduces_the_checkpoint(blood_run: Path, blood_images) -> None:
    folder = package_from_run(blood_run)
    assert sorted(p.name for p in folder.iterdir()) == [
        "gate.safetensors",
        "medclass-model.json",
        "weights.safetensors",
    ]
    manifest = json.loads((folder / "medclass-model.json").read_text())
    assert manifest["classes"][0] == "basophil" and manifest["task"] == "multiclass"
    assert manifest["preprocessing"]["decode_size"] == 28 and manifest["calibration"]["fitted_on"] == "val"
    assert manifest["source"]["run_dir"] == str(blood_run.resolve()) and manifest["model"]["pretrained"] is False
    package = load_package(folder)
    config = load_config(blood_run / "config.yaml")
    module, _ = load_module(config, "multiclass", package.classes, blood_run / "checkpoints" / "best.ckpt")
    _, images = blood_images
    batch = torch.from_numpy(np.transpose(images, (0, 3, 1, 2)).copy())
    with torch.inference_mode():
        expected = module(batch)
    assert torch.allclose(package.logits(batch), expected, atol=1e-5)


def test_predict_real_files_lists_the_unreadable(blood_run: Path, blood_images) -> None:
    folder, images = blood_images
    predictor = load_predictor(blood_run)
    result = predict_files(predictor, [str(folder), str(folder / "missing.png")], batch_size=3, top_k=3)
    assert len(result.predictions) == 8
    assert {Path(u["file"]).name for u in result.unreadable} == {"broken.png", "notes.png", "missing.png"}
    package = load_package(blood_run / "model")
    direct = package.logits(torch.from_numpy(np.transpose(images, (0, 3, 1, 2)).copy())).softmax(1).numpy()
    for prediction in result.predictions:
        index = int(Path(prediction.file).stem.split("_")[1])
        probabilities = np.array([prediction.probabilities[c] for c in package.classes])
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert probabilities == pytest.approx(direct[index], abs=1e-5)  # PNG round trip loses nothing at 28 px
        assert prediction.top[0][0] == prediction.predicted[0] and len(prediction.top) == 3
    tta = predict_files(predictor, [str(folder / "cell_0.png")], tta=True, calibrated=True)
    assert tta.predictions[0].probabilities != result.predictions[0].probabilities


@pytest.mark.slow
def test_export_command_says_two_lines_and_writes_readable_files(blood_run: Path, tmp_path: Path) -> None:
    """No third-party chatter (the ONNX optimizer logged ~15 INFO lines), and the weights file gets the same mode
    as its siblings (safetensors wrote it 0600)."""
    result = medclass("export", str(blood_run), "--out", str(tmp_path / "pkg"), "--onnx")
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("model package:") and lines[1].startswith("ONNX:"), lines
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "pkg").iterdir()}
    assert modes["weights.safetensors"] == modes["medclass-model.json"] == modes["model.onnx"], modes
    verbose = medclass("--verbose", "export", str(blood_run), "--out", str(tmp_path / "pkg2"), "--onnx")
    assert verbose.returncode == 0 and len((verbose.stdout + verbose.stderr).splitlines()) > 2, "--verbose keeps them"


def test_grey_uploads_predict_without_a_numpy_warning(breast_run, data_dir: Path) -> None:
    """A grey model decodes uploads into read-only arrays; torch warned "The given NumPy array is not writable"
    on each server's first request. Checked in a fresh process (torch warns once per process)."""
    image = sorted((data_dir / "brain_mri_4class" / "notumor").glob("*.jpg"))[0]
    code = (
        "import sys; from medclass.inference.predictor import load_predictor, decode, probabilities; "
        "p = load_predictor(sys.argv[1]); image = decode(p, open(sys.argv[2], 'rb')); "
        "assert not image.flags.writeable; print(probabilities(p, image[None], True, False).sum())"
    )
    done = subprocess.run([sys.executable, "-W", "always", "-c", code, str(breast_run.run_dir), str(image)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) == pytest.approx(1.0, abs=1e-5)
    assert "not writable" not in done.stderr, done.stderr


def test_onnx_matches_pytorch(blood_run: Path, blood_images, tmp_path: Path) -> None:
    from medclass.inference.onnx_export import export_onnx

    folder, images = blood_images
    package = load_package(package_from_run(blood_run))
    report = export_onnx(package, tmp_path / "model.onnx", np.transpose(images, (0, 3, 1, 2)).copy())
    print(f"ONNX vs PyTorch max abs difference: {report.max_abs_difference:.3e}")
    assert report.max_abs_difference < 1e-4 and report.images_checked == 8
    onnx_result = predict_files(load_predictor(tmp_path / "model.onnx"), [str(folder)], batch_size=5)
    torch_result = predict_files(load_predictor(blood_run), [str(folder)], batch_size=5)
    for a, b in zip(onnx_result.predictions, torch_result.predictions, strict=True):
        assert a.predicted == b.predicted
        assert list(a.probabilities.values()) == pytest.approx(list(b.probabilities.values()), abs=1e-4)


@pytest.mark.slow
def test_predict_command_writes_csv_json_and_heatmaps(blood_run: Path, blood_images, tmp_path: Path) -> None:
    folder, _ = blood_images
    result = medclass("predict", str(blood_run), str(folder / "cell_*.png"), str(folder / "broken.png"),
                      "--out", str(tmp_path / "p.csv"), "--heatmaps", str(tmp_path / "maps"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "8 image(s) predicted, 1 skipped" in result.stdout and "broken.png" in result.stderr
    with (tmp_path / "p.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and {"file", "predicted", "top1", "p_top1", "p:basophil"} <= set(rows[0])
    maps = sorted((tmp_path / "maps").glob("*.png"))
    assert len(maps) == 8
    with Image.open(maps[0]) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    side = pixels.shape[1]
    assert side >= 224 and pixels[:side].std() > 1
    # below the overlay, its colour legend: the jet bar from blue (low) to red (high), then the caption
    bar = pixels[side + 6]
    assert bar[2, 2] > bar[2, 0] + 60 and bar[-3, 0] > bar[-3, 2] + 60, "blue on the left, red on the right"
    assert pixels.shape[0] > side + 30 and (pixels[side + 16 :] < 100).any(), "a caption under the bar"
    as_json = medclass("predict", str(blood_run), str(folder / "cell_1.png"), "--out", str(tmp_path / "p.json"))
    assert as_json.returncode == 0, as_json.stderr
    payload = json.loads((tmp_path / "p.json").read_text())
    assert len(payload["predictions"]) == 1 and payload["predictions"][0]["file"].endswith("cell_1.png")
    # one class is a string in JSON as in the CSV (and the service)
    assert isinstance(payload["predictions"][0]["predicted"], str)
    # without --out: predictions.csv in the current folder, and the command says so with the full path
    here = tmp_path / "here"
    here.mkdir()
    default = medclass("predict", str(blood_run), str(folder / "cell_1.png"), cwd=here)
    assert default.returncode == 0, default.stderr
    assert f"written to {here / 'predictions.csv'} (the default" in " ".join(default.stdout.split())


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("vit_tiny_patch16_224", {"img_size": 64}), ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4})],
)
def test_heatmaps_for_transformers(tmp_path: Path, blood_images, name: str, kwargs: dict) -> None:
    from medclass.config import ModelConfig
    from medclass.inference.explain import heatmaps
    from medclass.inference.package import save_package
    from medclass.models import create_model

    config = ModelConfig(name=name, pretrained=False, kwargs=kwargs)
    torch.manual_seed(1)  # an untrained net: its maps depend on the draw, so draw the same one every time
    net = create_model(config, 8)
    preprocessing = {"decode_size": 28, "resize": "squash", "channels": 3, "in_chans": 3, "input_size": 64,
                     "mean": [0.5] * 3, "std": [0.5] * 3}  # fmt: skip
    package = load_package(save_package(tmp_path / "vit", net, config, "multiclass", [str(i) for i in range(8)],
                                        preprocessing))  # fmt: skip
    _, images = blood_images
    cams = heatmaps(package, np.transpose(images[:2], (0, 3, 1, 2)).copy(), [0, 3])
    maps = cams.maps
    assert maps.shape == (2, 28, 28) and np.all(maps >= 0) and np.all(maps <= 1) and maps.std() > 0
    assert not cams.degenerate.any()


@pytest.mark.slow
def test_registered_model_predicts_the_same(
    blood_run: Path, blood_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medclass.inference.registry import register_run

    folder, _ = blood_images
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # MLflow's default artifact folder is ./mlruns: nothing may land there
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    name, version, _ = register_run(blood_run, "blood-cells", uri)
    assert (name, version) == ("blood-cells", "1")
    assert register_run(blood_run, "blood-cells", uri)[1] == "2"
    downloads = tmp_path / "tmp"  # where the registered package is downloaded to, then removed once loaded
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    registered = predict_files(load_predictor("models:/blood-cells/1", uri), [str(folder / "cell_2.png")])
    local = predict_files(load_predictor(blood_run), [str(folder / "cell_2.png")])
    assert registered.predictions[0].probabilities == pytest.approx(local.predictions[0].probabilities)
    with pytest.raises(UserError, match="cannot fetch models:/nope/1"):
        load_predictor("models:/nope/1", uri)
    assert list(downloads.iterdir()) == [], "no download is left behind (each used to leave 43 MB in /tmp)"
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert list(workdir.iterdir()) == []
    assert list((tmp_path / "mlartifacts").rglob("weights.safetensors"))
    # Without --tracking-uri: the store the help names (runs/mlflow.db here), where predict looks too; the same run
    # registered into this second store gets a run of its own there (it used to fail with "Run ... not found").
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = medclass("register", str(blood_run), "--name", "blood-cells", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "Updating database tables" not in result.stderr, "MLflow's INFO lines stay out (unless --verbose)"
    assert f"registered models:/blood-cells/1 in sqlite:///{workdir / 'runs' / 'mlflow.db'}" in " ".join(
        result.stdout.split()
    )
    again = medclass("predict", "models:/blood-cells/1", str(folder / "cell_2.png"), "--out",
                     str(tmp_path / "r.csv"), cwd=workdir)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert register_run(blood_run, "blood-cells", uri)[1] == "3", "the first store still works"


def test_model_files_from_something_else(blood_run: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "medclass-model.json").write_text(json.dumps({"format": "keras", "layers": []}))
    with pytest.raises(ModelError, match="not a medclass model manifest"):
        load_package(fake)
    good = package_from_run(blood_run, out=tmp_path / "good")
    pickled = tmp_path / "pickled"
    shutil.copytree(good, pickled)
    (pickled / "weights.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_package(pickled)
    other = tmp_path / "other-architecture"
    shutil.copytree(good, other)
    manifest = json.loads((other / "medclass-model.json").read_text())
    manifest["model"]["name"] = "resnet34"
    (other / "medclass-model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="does not fit the architecture"):
        load_package(other)
    (tmp_path / "model.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_predictor(tmp_path / "model.onnx")
    with pytest.raises(ModelError, match="not a medclass model"):
        load_predictor(tmp_path)
    with pytest.raises(UserError, match="no images to predict"):
        predict_files(load_predictor(good), [str(tmp_path / "nothing-here-*.png")])
