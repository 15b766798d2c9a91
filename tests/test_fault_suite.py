"""The fault and bad-input suite: for every command, inputs a user can get wrong (paths, configs, overrides, data,
run directories, model files, options), each expected to end in one clear ``error:`` line and exit code 2, never a
traceback. Commands run in-process through typer's runner (the real CLI code; subprocess start-up would cost ~8 s
per case). Storage faults (read-only output folder, full disk) run the real CLI in a subprocess.

Upload faults of the service are in tests/inference/test_serve.py (real server) and test_serve_fuzz.py. Every
input tried and the message it got are written to test-artifacts/fault_suite.md.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medclass.cli.app import app
from medclass.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "test-artifacts" / "fault_suite.md"
SEEN: dict[str, tuple[str, str]] = {}  # case -> (command, message)

BREAST = str(REPO / "configs" / "breastmnist.yaml")

# (case, command with {run} {dir} {pkg} placeholders, fragment the one error line must contain)
CASES = [
    # config files
    ("config file missing", "train -c {dir}/nope.yaml", "config file {dir}/nope.yaml not found"),
    ("config path is a folder", "train -c {dir}", "is a folder: give a config file"),
    ("config YAML syntax error", "train -c {dir}/broken.yaml", "invalid YAML at line 3"),
    ("config is a YAML list", "train -c {dir}/list.yaml", "the top level must be a mapping"),
    ("config not UTF-8 text", "train -c {dir}/binary.yaml", "not a text file"),
    ("config unknown section", "train -c {dir}/typo.yaml", "modle: unknown field (did you mean model"),
    ("config without data", "config -c {dir}/nodata.yaml", "data: required field is missing"),
    ("config unknown source", "config -c {dir}/source.yaml", "unknown source 'folders' (did you mean folder"),
    # overrides
    ("override without =", f"train -c {BREAST} trainer.max_epochs", "must look like section.field=value"),
    ("override unknown field", f"train -c {BREAST} trainer.max_epoch=3", "unknown field (did you mean max_epochs"),
    ("override negative epochs", f"train -c {BREAST} trainer.max_epochs=-1", "greater than 0 (got -1)"),
    ("override learning rate 5", f"train -c {BREAST} optimizer.lr=5", "makes no sense for a learning rate"),
    ("override batch size 0", f"train -c {BREAST} data.batch_size=0", "greater than 0 or 'auto' (got 0)"),
    ("override on_device maybe", f"train -c {BREAST} data.on_device=maybe", "data.on_device: Input should be 'auto'"),
    (
        "override split fractions",
        f"train -c {BREAST} data.source=folder data.root=/x data.split.train=0.5",
        "must add up to 1",
    ),
    (
        "batch size auto with 2 devices",
        f"train -c {BREAST} data.batch_size=auto trainer.devices=2",
        "single-device runs",
    ),
    ("accelerator gpu without GPU", f"train -c {BREAST} trainer.accelerator=gpu", "trainer:"),
    ("unknown model name", f"train -c {BREAST} model.name=resnet1800", "timm has no model 'resnet1800'"),
    (
        "HF model offline",
        f"train -c {BREAST} model.name=hf:nobody/no-such-model",
        "cannot load HuggingFace model 'nobody/no-such-model' (offline",
    ),
    # data
    ("MedMNIST flag typo", "train -c {dir}/flag.yaml", "not a MedMNIST dataset (did you mean bloodmnist"),
    ("3D MedMNIST flag", f"train -c {BREAST} data.flag=organmnist3d", "3D MedMNIST dataset"),
    ("image folder missing", "train -c {dir}/folder.yaml", "folder {dir}/nowhere does not exist"),
    ("class folder without images", "train -c {dir}/emptyfolder.yaml", "has no images"),
    ("label CSV without label column", "train -c {dir}/emptycsv.yaml", "has no column 'label'"),
    ("label CSV without image column", "train -c {dir}/colscsv.yaml", "has no column 'image_id'"),
    ("data inspect of a missing config", "data inspect {dir}/nope.yaml", "not found"),
    ("data build of a missing recipe", "data build {dir}/nope.yaml", "not found"),
    # run directories
    ("resume a missing folder", "train --resume {dir}/nope", "is not a folder"),
    ("resume a folder that is no run", "train --resume {dir}/notrun", "not a medclass run directory"),
    ("resume a finished run", "train --resume {run}", "finished already"),
    ("evaluate a missing path", "evaluate {dir}/nope", "does not exist"),
    ("evaluate a folder without runs", "evaluate {dir}/notrun", "holds no run directories"),
    ("evaluate split typo", "evaluate {run} --split tset", "split 'tset' does not exist"),
    ("evaluate metric typo", "evaluate {run} --metric acuracy", "unknown metric 'acuracy' (did you mean"),
    ("evaluate checkpoint name", "evaluate {run} --checkpoint middle", "checkpoint 'middle' is not one of"),
    ("evaluate unknown corruption", "evaluate {run} --corruptions fog", "unknown corruption 'fog'"),
    ("evaluate severity 9", "evaluate {run} --corruptions jpeg --severities 9", "9 is not a severity"),
    ("evaluate run of another version", "evaluate {dir}/future_run", "format version 99"),
    ("export a folder that is no run", "export {dir}/notrun", "not a medclass run directory"),
    ("register a folder that is no run", "register {dir}/notrun --name x", "not a medclass run directory"),
    ("features of a folder that is no run", f"features {{dir}}/notrun {BREAST}", "neither a model package nor a run"),
    ("features on a missing config", "features {run} {dir}/nope.yaml", "not found"),
    # model files
    ("predict with a missing model", "predict {dir}/nope {dir}/cols.csv", "does not exist"),
    ("predict with a garbage .onnx", "predict {dir}/bad.onnx {dir}/cols.csv", "not a valid ONNX model"),
    ("predict with a pickle as weights", "predict {dir}/pickled {dir}/cols.csv", "not a readable safetensors file"),
    ("predict with a foreign manifest", "predict {dir}/foreign {dir}/cols.csv", "not a medclass model manifest"),
    ("predict with weights of another model", "predict {dir}/other_arch {dir}/cols.csv", "does not fit"),
    ("predict on no images", "predict {pkg} {dir}/nothing-*.png", "no images to predict"),
    ("serve a missing model", "serve {dir}/nope", "does not exist"),
    # options
    ("memory of an unknown model", "memory --model resnet1800", "timm has no model 'resnet1800'"),
    ("memory precision fp8", "memory --model resnet18 --precision fp8", "--precision 'fp8'"),
    ("memory batch sizes not numbers", "memory --model resnet18 --measure a,b", "--measure 'a,b'"),
    ("benchmark without models", f"benchmark -c {BREAST}", "lists no models to benchmark"),
    # bounds (issue 16): each once ended in a traceback
    ("config with nested aliases (YAML bomb)", "config -c {dir}/bomb.yaml", "would expand to 4,412,961,516 values"),
    ("override betas NaN and 2", f"config -c {BREAST} optimizer.betas=[.nan,2]", "should be a finite number"),
    ("override seed beyond 2**32", f"config -c {BREAST} seed=99999999999999999999", "less than 4294967296"),
    ("override devices -3", f"config -c {BREAST} trainer.devices=-3", "positive number, -1 (all) or auto"),
    ("override image size 100000", f"config -c {BREAST} data.input_size=100000", "less than or equal to 4096"),
    (
        "override calibration bins unbounded",
        f"config -c {BREAST} evaluation.calibration_bins=99999999",
        "less than or equal to 1000",
    ),
    # damaged or edited packages (issue 16)
    ("package with 3 classes for 2-class weights", "predict {dir}/three_classes {dir}/cols.csv", "has 2 outputs"),
    ("package with 5,000,000 classes", "predict {dir}/many_classes {dir}/cols.csv", "5000000 classes"),
    ("package with a huge decode size", "predict {dir}/huge_decode {dir}/cols.csv", "decode_size 1000000"),
    ("package with std 0", "predict {dir}/zero_std {dir}/cols.csv", "zero std gives NaN"),
    ("package with temperature 0", "predict {dir}/zero_temperature {dir}/cols.csv", "temperature 0"),
    ("package with wrongly shaped weights", "predict {dir}/wrong_shapes {dir}/cols.csv", "size mismatch"),
    # model.kwargs.checkpoint_path meets timm and torch.load (issue 16)
    (
        "checkpoint_path to a pickle",
        f"train -c {BREAST} output_dir={{dir}}/runs model.kwargs.checkpoint_path={{dir}}/objects.pkl",
        "cannot be read as weights only",
    ),
    (
        "checkpoint_path to garbage bytes",
        f"train -c {BREAST} output_dir={{dir}}/runs model.kwargs.checkpoint_path={{dir}}/bad.onnx",
        "give a state dict saved with torch.save",
    ),
    (
        "checkpoint_path of another architecture",
        f"train -c {BREAST} output_dir={{dir}}/runs model.kwargs.checkpoint_path={{dir}}/resnet10t.pth",
        "its weights are of another model",
    ),
    (
        "checkpoint_path missing",
        f"train -c {BREAST} output_dir={{dir}}/runs model.kwargs.checkpoint_path={{dir}}/nope.pth",
        "checkpoint_path: {dir}/nope.pth is not a file",
    ),
]


@pytest.fixture(scope="module")
def trained_run(breast_run) -> Path:
    """The session's BreastMNIST run (the faults below only read it, or a copy)."""
    return breast_run.run_dir


@pytest.fixture(scope="module")
def bad_inputs(module_tmp: Path, trained_run: Path) -> dict[str, str]:
    from medclass.inference.package import package_from_run

    d = module_tmp
    (d / "broken.yaml").write_text("experiment: x\ndata: {flag: breastmnist\n")
    (d / "list.yaml").write_text("- a\n- b\n")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81binary")
    (d / "typo.yaml").write_text("experiment: x\nmodle: {name: resnet18}\ndata: {flag: breastmnist}\n")
    (d / "nodata.yaml").write_text("experiment: x\n")
    (d / "source.yaml").write_text("experiment: x\ndata: {source: folders, root: /x}\n")
    (d / "flag.yaml").write_text("experiment: x\ndata: {flag: bloodmnst}\n")
    (d / "folder.yaml").write_text(f"experiment: x\ndata: {{source: folder, root: {d}/nowhere}}\n")
    (d / "emptyfolder" / "a").mkdir(parents=True)
    (d / "emptyfolder.yaml").write_text(f"experiment: x\ndata: {{source: folder, root: {d}/emptyfolder}}\n")
    (d / "empty.csv").write_text("image_id,dx\n")
    (d / "emptycsv.yaml").write_text(f"experiment: x\ndata: {{source: csv, csv: {d}/empty.csv}}\n")
    (d / "cols.csv").write_text("img,label\na.jpg,x\n")
    (d / "colscsv.yaml").write_text(f"experiment: x\ndata: {{source: csv, csv: {d}/cols.csv}}\n")
    (d / "bad.onnx").write_bytes(b"\x08\x01not onnx")
    (d / "notrun").mkdir()
    future = d / "future_run"
    shutil.copytree(trained_run, future)
    status = json.loads((future / "run.json").read_text())
    (future / "run.json").write_text(json.dumps({**status, "format_version": 99}))
    package = package_from_run(trained_run, out=d / "package")
    pickled = shutil.copytree(package, d / "pickled")
    (pickled / "weights.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    foreign = shutil.copytree(package, d / "foreign")
    (foreign / "medclass-model.json").write_text(json.dumps({"format": "keras", "layers": []}))
    other = shutil.copytree(package, d / "other_arch")
    manifest = json.loads((other / "medclass-model.json").read_text())
    manifest["model"]["name"] = "resnet34"
    (other / "medclass-model.json").write_text(json.dumps(manifest))
    (d / "objects.pkl").write_bytes(pickle.dumps({"run": os.system}))  # what a checkpoint must never execute
    import timm
    import torch

    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), d / "resnet10t.pth")
    bomb = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    bomb += [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefghi", "bcdefghij", strict=True)]
    (d / "bomb.yaml").write_text("\n".join(bomb) + "\n")

    def edited(name: str, change) -> None:
        folder = shutil.copytree(package, d / name)
        manifest = json.loads((folder / "medclass-model.json").read_text())
        change(manifest)
        (folder / "medclass-model.json").write_text(json.dumps(manifest))

    edited("three_classes", lambda m: m.update(classes=["a", "b", "c"]))
    edited("many_classes", lambda m: m.update(classes=[str(i) for i in range(5_000_000)]))
    edited("huge_decode", lambda m: m["preprocessing"].update(decode_size=1_000_000))
    edited("zero_std", lambda m: m["preprocessing"].update(std=[0.0, 0.0, 0.0]))
    edited("zero_temperature", lambda m: m["calibration"].update(temperature=0))
    from safetensors.torch import load_file, save_file

    wrong = shutil.copytree(package, d / "wrong_shapes")
    state = load_file(str(wrong / "weights.safetensors"))
    first = next(k for k, v in state.items() if v.ndim == 4)
    state[first] = state[first][:, :, :1, :1].contiguous()
    save_file(state, str(wrong / "weights.safetensors"))
    return {"dir": str(d), "run": str(trained_run), "pkg": str(package)}


@pytest.fixture(scope="module", autouse=True)
def _write_artifact():
    yield
    if SEEN:
        ARTIFACT.parent.mkdir(exist_ok=True)
        lines = [f"# Fault suite: {len(SEEN)} distinct bad inputs, each with the message it got", "",
                 "| # | bad input | command | message |", "|---|---|---|---|"]  # fmt: skip
        for i, (case, (command, message)) in enumerate(SEEN.items(), 1):
            command = command.replace(f"{REPO}/", "")
            lines.append(f"| {i} | {case} | `{command}` | {message.replace('|', '/')} |")
        ARTIFACT.write_text("\n".join(lines) + "\n")


def _error_line(result) -> str:
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture(autouse=True)
def _logging_as_it_was(monkeypatch: pytest.MonkeyPatch):
    """An in-process command configures logging for the whole process, as a real command does for its own: put it
    back, so later tests in this process (W&B's and transformers' quiet mode read the root level) are unaffected."""
    current = os.environ.get("MLFLOW_LOGGING_LEVEL")  # a command sets it when unset: registered to be undone
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", current or "")
    if current is None:
        monkeypatch.delenv("MLFLOW_LOGGING_LEVEL")
    loggers = [logging.getLogger(), logging.getLogger("medclass")]
    saved = [(logger, logger.level, logger.handlers[:]) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.mark.parametrize(("case", "command", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_line(case: str, command: str, fragment: str, bad_inputs: dict[str, str]) -> None:
    args = [word.format(**bad_inputs) for word in command.split()]
    line = _error_line(CliRunner().invoke(app, args))
    assert fragment.format(**bad_inputs) in line, line
    SEEN[case] = (command, line.removeprefix("error: ").replace(bad_inputs["dir"], "…"))


def test_the_suite_tries_many_distinct_inputs() -> None:
    """Many different mistakes, not one mistake many times: distinct command lines, and once the cases above have
    run (the whole file), a different message for each case of a command."""
    commands = [command for _, command, _ in CASES]
    assert len({case for case, _, _ in CASES}) == len(set(commands)) == len(CASES) >= 50
    if len(SEEN) == len(CASES):  # one command never answers two of its cases with the same message
        said = [(" ".join(command.split()[:2 if command.startswith("data") else 1]), message)
                for command, message in SEEN.values()]  # fmt: skip
        repeated = sorted({pair for pair in said if said.count(pair) > 1})
        assert not repeated, f"the same answer to different inputs: {repeated}"


def test_verbose_keeps_the_cause(bad_inputs: dict[str, str]) -> None:
    args = ["train", "-c", BREAST, f"output_dir={bad_inputs['dir']}/runs",
            f"model.kwargs.checkpoint_path={bad_inputs['dir']}/objects.pkl"]  # fmt: skip
    quiet = CliRunner().invoke(app, args)
    assert "Traceback" not in quiet.output and quiet.exit_code == 2
    verbose = CliRunner().invoke(app, ["--verbose", *args])
    assert verbose.exit_code == 2 and "error: model.kwargs.checkpoint_path" in verbose.output
    assert "cause (--verbose):" in verbose.output and "Traceback" in verbose.output
    assert "weights_only=True blocked loading" in verbose.output, "the library's own message is kept"
    assert not (Path(bad_inputs["dir"]) / "runs").exists(), "a refused model leaves no run directory behind"


def _cli(*args: str, limit_bytes: int | None = None, user: str | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("medclass")
    command = [str(script), *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", "--regid=65534", "--clear-groups", *command]

    def limit() -> None:
        if limit_bytes is not None:  # the kernel refuses writes past this size (EFBIG): a disk that fills up
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=limit,
                          env={**os.environ, "MEDCLASS_CACHE": "/tmp/medclass-fault-cache"})  # fmt: skip


def test_disk_full_while_saving_a_checkpoint_keeps_what_was_written(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    # resnet18 checkpoints are ~130 MB: the first one cannot be written under a 20 MB file-size limit
    result = _cli("train", "-c", BREAST, f"output_dir={out}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                  limit_bytes=20 * 2**20)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "cannot write" in error and "checkpoints" in error and "File too large" in error
    assert "no checkpoint to resume from" in error, "the first checkpoint could not be written"
    (run,) = (out / "breastmnist").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not list(run.rglob("*.tmp")), "no half-written temporary files are left"
    files = RunDir(run)  # what a run writes before its first checkpoint: whole, readable files
    assert files.load_config().experiment == "breastmnist"
    assert files.read_data_summary()["name"] == "breastmnist" and files.read_environment()["seed"] == 42
    assert json.loads(files.preprocessing_path.read_text())["in_chans"] in (1, 3)


def test_export_onto_a_full_disk_leaves_no_partial_package(trained_run: Path, tmp_path: Path) -> None:
    """safetensors reports a full disk as its own SafetensorError; it must read like any other full disk."""
    result = _cli("export", str(trained_run), "--out", str(tmp_path / "pkg"), limit_bytes=20 * 2**20)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"cannot write {tmp_path / 'pkg' / 'weights.safetensors'}: File too large" in error, error
    assert list((tmp_path / "pkg").iterdir()) == [], "no partial weights and no manifest"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 60 MB file system (tmpfs): room for a ResNet-18 package (45 MB) but not for its ONNX file too."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_onnx_export_onto_a_full_disk(trained_run: Path, small_disk: Path) -> None:
    result = _cli("export", str(trained_run), "--out", str(small_disk / "pkg"), "--onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert f"cannot write {small_disk / 'pkg' / 'model.onnx'}: No space left on device" in error, error
    left = sorted(p.name for p in (small_disk / "pkg").iterdir())
    assert left == ["gate.safetensors", "medclass-model.json", "weights.safetensors"], "whole, no partial ONNX file"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to switch user")
def test_read_only_output_folder() -> None:
    parent = Path(tempfile.mkdtemp(prefix="medclass-readonly-"))  # pytest's tmp_path is private to root
    parent.chmod(0o755)
    locked = parent / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    os.makedirs("/tmp/medclass-fault-cache", exist_ok=True)
    os.chmod("/tmp/medclass-fault-cache", 0o777)
    result = _cli("train", "-c", BREAST, f"output_dir={locked}", "trainer.max_epochs=1", user="nobody")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "Permission denied" in error and "output_dir" in error
    assert list(locked.iterdir()) == []
    shutil.rmtree(parent)


def test_concurrent_runs_under_one_experiment_name(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("medclass")
    args = [str(script), "train", "-c", BREAST, f"output_dir={tmp_path}", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.progress_bar=false", "evaluation.bootstrap=0"]  # fmt: skip
    processes = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read() if process.stderr else ""
    runs = sorted((tmp_path / "breastmnist").iterdir())
    assert len(runs) == 2, "two runs started in the same second get two folders"
    for run in runs:
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "metrics.json").is_file()
