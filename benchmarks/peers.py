"""medclass against the tools its users would pick instead, on the same data, the same machine, the same day:
fastai (``pip install -e '.[bench]'``) and the MedMNIST authors' own ``MedMNIST2D/train_and_eval_pytorch.py``
(a checkout of https://github.com/MedMNIST/experiments, given with ``--medmnist-experiments DIR``; never copied into
this repository).

    export MEDCLASS_DATA=$PWD/../shared/data
    python benchmarks/peers.py [--sets breastmnist,retinamnist,bloodmnist,chest_xray] [--seeds 1,2,3]
        [--tools medclass,fastai,medmnist-authors] [--epochs N] [--medmnist-experiments DIR] [--jobs J]
        [--out DIR] [--work DIR] [--fresh]

Per set, every tool trains for the same number of epochs (the medclass recipe's, or ``--epochs``), once per seed,
and its best-validation model is scored on the held-out test split. A peer far slower per epoch can instead be given
a CPU-time budget: run it alone with fewer ``--epochs``; its ratio line then ends in ``epochs 15/1`` (medclass's /
the peer's).

- medclass: the recipe it ships for the set (``configs/tuned/<set>.yaml`` where tuning shipped one, else
  ``configs/<set>.yaml``), run as ``medclass train`` runs it (training, then the gate, the test evaluation with
  bootstrap intervals and the report, all inside its CPU time).
- fastai: what its documentation teaches: ``ImageDataLoaders.from_folder`` (MedMNIST sets exported once to PNG
  folders train/val/test; for chest_xray the ``train`` folder alone with ``valid_pct=0.1``: pointed at the root with
  ``valid_pct`` it would collect the test folder too), ``Resize`` to the medclass recipe's input size,
  ``aug_transforms()``, ``vision_learner(resnet18, pretrained=False)`` (no weights can be downloaded here, and the
  medclass recipes train from scratch too), ``fit_one_cycle`` at fastai's default learning rate, and
  ``SaveModelCallback`` keeping the epoch with the lowest validation loss. Same batch size as the medclass recipe.
- medmnist-authors: their script as published (ResNet-18 at 28 px, Adam 1e-3, batch 128, learning rate x0.1 at 50%
  and 75% of the epochs, best validation AUC), reading the shared npz files; MedMNIST sets only.

Every metric is computed the same way, with the MedMNIST package's own ``getAUC`` / ``getACC`` (the authors' script
prints exactly these). CPU seconds are the user + system time of the run's process and everything it waited for
(``os.wait4``), wall seconds beside them. Runs go one after another with every core (``--jobs J`` runs J at once,
each with 1/J of the cores: its torch threads and OMP/MKL threads), so runs never share a core's threads.

A tool that is not installed or not given is reported as skipped with the reason, and a run that fails as failed
with the last line it printed; the others still run. Writes ``<out>/peers.md`` and ``peers.csv`` (default
``benchmarks/results/peers``): an invocation replaces its own rows (set, tool, seed) and keeps the others, so sets
can be run one at a time (``--fresh`` starts a new table). One line per set and peer of the form
``peers breastmnist: medclass/fastai AUC 1.02, ACC 1.01, CPU 0.78`` (ratios of the means).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's machine and git lines
from medmnist_reproduce import git_state, machine_line  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "peers"
DEFAULT_WORK = REPO / "runs" / "peers"
TOOLS = ("medclass", "fastai", "medmnist-authors")
AUTHORS_SCRIPT = Path("MedMNIST2D") / "train_and_eval_pytorch.py"
AUTHORS_RESULT = re.compile(r"test\s+auc:\s*([0-9.]+)\s+acc:\s*([0-9.]+)")


@dataclass(frozen=True)
class PeerSet:
    name: str
    label: str
    config: str  # the medclass recipe, relative to the repository root
    medmnist: str | None = None  # the npz flag, or None for a folder under MEDCLASS_DATA
    folder: str | None = None


SETS = {
    s.name: s
    for s in (
        PeerSet("breastmnist", "BreastMNIST", "configs/tuned/breastmnist.yaml", medmnist="breastmnist"),
        PeerSet("retinamnist", "RetinaMNIST", "configs/tuned/retinamnist.yaml", medmnist="retinamnist"),
        PeerSet("bloodmnist", "BloodMNIST", "configs/bloodmnist.yaml", medmnist="bloodmnist"),
        PeerSet("chest_xray", "chest_xray (folders)", "configs/chest_xray.yaml", folder="chest_xray"),
    )
}


@dataclass
class Run:
    set: str
    tool: str
    seed: int
    epochs: int
    status: str = "ok"  # ok, skipped: why, failed: why
    test_auc: float | None = None
    test_acc: float | None = None
    cpu_s: float | None = None
    wall_s: float | None = None
    threads: int | None = None
    log: str = ""
    date: str = ""
    command: str = ""  # the invocation that ran it (each row can be regenerated alone)
    machine: str = ""
    versions: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.set, self.tool, self.seed

    @classmethod
    def from_row(cls, row: dict[str, str]) -> Run:
        number = {"seed": int, "epochs": int, "threads": int, "test_auc": float, "test_acc": float, "cpu_s": float,
                  "wall_s": float}  # fmt: skip
        values: dict[str, Any] = {k: (number[k](v) if v else None) if k in number else v for k, v in row.items()}
        values["details"] = json.loads(row.get("details") or "{}")
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def data_root() -> Path:
    root = os.environ.get("MEDCLASS_DATA")
    return Path(root) if root else REPO.parent / "shared" / "data"


def recipe(peer_set: PeerSet) -> dict[str, Any]:
    """The medclass recipe's epochs, batch size and network input size (what the peers are given too)."""
    from medclass.config import load_config

    data = load_config(REPO / peer_set.config).data
    size = getattr(data, "input_size", None) or getattr(data, "size", None) or 28
    return {"epochs": load_config(REPO / peer_set.config).trainer.max_epochs, "batch_size": data.batch_size,
            "size": int(size)}  # fmt: skip


def scores(targets: Any, probabilities: Any, n_classes: int) -> tuple[float, float]:
    """Test AUC and ACC by the MedMNIST package's definitions, the same for every tool."""
    import numpy as np
    from medmnist.evaluator import getACC, getAUC

    task = "binary-class" if n_classes == 2 else "multi-class"
    targets, probabilities = np.asarray(targets), np.asarray(probabilities, dtype=np.float64)
    return float(getAUC(targets, probabilities, task)), float(getACC(targets, probabilities, task))


# ---------------------------------------------------------------------------------------------------------------
# The runs, each in a process of its own (``peers.py --worker SPEC``).


def run_medclass(peer_set: PeerSet, seed: int, epochs: int, work: Path) -> dict[str, Any]:
    """What ``medclass train -c <recipe> seed=S trainer.max_epochs=E`` runs, defaults and all: training, the
    out-of-distribution gate, the test evaluation with bootstrap intervals and the report count in its CPU time."""
    from medclass.config import load_config
    from medclass.evaluation.evaluate import read_predictions
    from medclass.experiments import run_experiment

    overrides = [f"output_dir={work}", f"seed={seed}", f"trainer.max_epochs={epochs}", "trainer.progress_bar=false"]
    result = run_experiment(load_config(REPO / peer_set.config, overrides))
    predictions = result.run_dir / "predictions_test.csv"
    with predictions.open(newline="") as handle:
        classes = [c.removeprefix("p:") for c in next(csv.reader(handle)) if c.startswith("p:")]
    targets, probabilities, _ = read_predictions(predictions, classes, "multiclass")
    auc, acc = scores(targets, probabilities, len(classes))
    details = {"config": peer_set.config, "run_dir": str(result.run_dir), "best_epoch": result.best_epoch,
               "medclass_auc": result.test.metrics["auc"]}  # fmt: skip
    return {"test_auc": auc, "test_acc": acc, "details": details}


def export_medmnist(flag: str, cache: Path) -> Path:
    """The npz as PNG folders <split>/<class index>/<i>.png, once (fastai reads folders of image files)."""
    import numpy as np
    from PIL import Image

    root = cache / flag
    if (root / ".complete").exists():
        return root
    arrays = np.load(data_root() / "medmnist" / f"{flag}.npz")
    for split in ("train", "val", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / f"{int(label):02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    (root / ".complete").touch()
    return root


def fastai_loaders(peer_set: PeerSet, seed: int, work: Path) -> tuple[Any, Path]:
    """fastai's DataLoaders for the set, as its documentation builds them, and the folder whose ``test`` it scores."""
    import torch
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms

    settings = recipe(peer_set)
    common = {"item_tfms": Resize(settings["size"]), "batch_tfms": aug_transforms(), "bs": settings["batch_size"],
              "num_workers": 0, "device": torch.device("cpu")}  # fmt: skip
    if peer_set.medmnist:
        root = export_medmnist(peer_set.medmnist, work.parent / "png")
        return ImageDataLoaders.from_folder(root, train="train", valid="val", **common), root
    root = data_root() / peer_set.folder
    # The train folder only: from_folder(root, valid_pct=...) would gather the test folder into train/valid.
    return ImageDataLoaders.from_folder(root / "train", valid_pct=0.1, seed=seed, **common), root


def run_fastai(peer_set: PeerSet, seed: int, epochs: int, work: Path) -> dict[str, Any]:
    from fastai.vision.all import SaveModelCallback, accuracy, get_image_files, resnet18, set_seed, vision_learner

    set_seed(seed)
    dls, root = fastai_loaders(peer_set, seed, work)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy, path=work)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, cbs=SaveModelCallback(monitor="valid_loss", fname="best"))
    test_dl = learn.dls.test_dl(get_image_files(root / "test"), with_labels=True)
    probabilities, targets = learn.get_preds(dl=test_dl)
    auc, acc = scores(targets.numpy(), probabilities.numpy(), len(dls.vocab))
    sizes = {"train": len(dls.train_ds), "valid": len(dls.valid_ds), "test": len(test_dl.dataset)}
    return {"test_auc": auc, "test_acc": acc, "details": sizes}


def run_authors(peer_set: PeerSet, seed: int, epochs: int, work: Path, checkout: Path) -> dict[str, Any]:
    """Their script as published, with HOME pointing at a folder whose .medmnist holds the shared npz files (the
    script reads ~/.medmnist and has no root option); the seed goes in through PYTHONHASHSEED only: the script sets
    none, so its runs differ as a user's would."""
    home = work / "home"
    (home / ".medmnist").mkdir(parents=True, exist_ok=True)
    link = home / ".medmnist" / f"{peer_set.medmnist}.npz"
    if not link.exists():
        link.symlink_to(data_root() / "medmnist" / f"{peer_set.medmnist}.npz")
    command = [sys.executable, AUTHORS_SCRIPT.name, "--data_flag", peer_set.medmnist, "--num_epochs", str(epochs),
               "--gpu_ids", "-1", "--output_root", str(work / "output"), "--size", "28"]  # fmt: skip
    env = {**os.environ, "HOME": str(home), "PYTHONHASHSEED": str(seed)}
    log = work / "authors.log"
    with log.open("w") as handle:
        done = subprocess.run(
            command, cwd=checkout / AUTHORS_SCRIPT.parent, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    found = AUTHORS_RESULT.findall(log.read_text(errors="replace"))
    if done.returncode or not found:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"their script exited with {done.returncode}: {tail[0][:200]}")
    auc, acc = (float(v) for v in found[-1])  # the last: the best-validation model on the test split
    return {"test_auc": auc, "test_acc": acc, "details": {"command": shlex.join(command)}}


def worker(spec: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    work = Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    peer_set = SETS[spec["set"]]
    if spec["tool"] == "medclass":
        result = run_medclass(peer_set, spec["seed"], spec["epochs"], work)
    elif spec["tool"] == "fastai":
        result = run_fastai(peer_set, spec["seed"], spec["epochs"], work)
    else:
        result = run_authors(peer_set, spec["seed"], spec["epochs"], work, Path(spec["checkout"]))
    (work / "result.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# The driver.


def skip_reason(tool: str, peer_set: PeerSet, checkout: Path | None) -> str | None:
    if peer_set.medmnist and not (data_root() / "medmnist" / f"{peer_set.medmnist}.npz").exists():
        return f"no {peer_set.medmnist}.npz under {data_root() / 'medmnist'}"
    if peer_set.folder and not (data_root() / peer_set.folder).is_dir():
        return f"no folder {data_root() / peer_set.folder}"
    if tool == "fastai":
        try:
            metadata.version("fastai")
        except metadata.PackageNotFoundError:
            return "fastai is not installed (pip install -e '.[bench]')"
    if tool == "medmnist-authors":
        if peer_set.medmnist is None:
            return "their script reads MedMNIST sets only"
        if checkout is None:
            return "no --medmnist-experiments checkout given"
        if not (checkout / AUTHORS_SCRIPT).exists():
            return f"{checkout} has no {AUTHORS_SCRIPT}"
        try:
            metadata.version("tensorboardX")
        except metadata.PackageNotFoundError:
            return "their script needs tensorboardX (pip install -e '.[bench]')"
    return None


def launch(run: Run, work: Path, checkout: Path | None) -> Run:
    """One run in a process of its own with ``run.threads`` threads; its CPU time from os.wait4."""
    spec = {"set": run.set, "tool": run.tool, "seed": run.seed, "epochs": run.epochs, "threads": run.threads,
            "work": str(work), "checkout": str(checkout) if checkout else None}  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    threads = str(run.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONWARNINGS": "ignore"}
    log = work / "run.log"
    run.log = str(log)
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    run.wall_s = time.perf_counter() - started
    run.cpu_s = usage.ru_utime + usage.ru_stime
    result_file = work / "result.json"
    if process.returncode or not result_file.exists():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        run.status = f"failed: {(lines[-1] if lines else 'no output')[:200]}"
        return run
    result = json.loads(result_file.read_text())
    run.test_auc, run.test_acc, run.details = result["test_auc"], result["test_acc"], result["details"]
    return run


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def summarise(runs: list[Run]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per set and tool: means and SDs; per set and peer: the medclass / peer ratio lines."""
    table, lines = [], []
    for name in dict.fromkeys(r.set for r in runs):
        by_tool: dict[str, list[Run]] = {}
        for r in runs:
            if r.set == name:
                by_tool.setdefault(r.tool, []).append(r)
        means, notes, epochs = {}, {}, {}
        for tool, tool_runs in by_tool.items():
            done = [r for r in tool_runs if r.status == "ok"]
            not_done = sorted({r.status for r in tool_runs if r.status != "ok"})
            row = {"set": name, "tool": tool, "runs": f"{len(done)}/{len(tool_runs)}", "epochs": tool_runs[0].epochs,
                   "auc": mean_sd([r.test_auc for r in done]), "acc": mean_sd([r.test_acc for r in done]),
                   "cpu_s": f"{statistics.mean(r.cpu_s for r in done):.0f}" if done else "-",
                   "wall_s": f"{statistics.mean(r.wall_s for r in done):.0f}" if done else "-",
                   "note": "; ".join(not_done)}  # fmt: skip
            table.append(row)
            notes[tool], epochs[tool] = row["note"], row["epochs"]
            if done:
                means[tool] = [statistics.mean(getattr(r, k) for r in done) for k in ("test_auc", "test_acc", "cpu_s")]
        for tool in by_tool:
            if tool == "medclass" or "medclass" not in means:
                continue
            if tool not in means:
                lines.append(f"peers {name}: medclass/{tool} not measured ({notes[tool] or 'no run'})")
                continue
            ours, theirs = means["medclass"], means[tool]
            # a peer given other epochs (a CPU-time budget instead of the same epochs) says so on its line
            budget = f", epochs {epochs['medclass']}/{epochs[tool]}" if epochs["medclass"] != epochs[tool] else ""
            lines.append(f"peers {name}: medclass/{tool} AUC {ours[0] / theirs[0]:.2f}, ACC {ours[1] / theirs[1]:.2f}, "
                         f"CPU {ours[2] / theirs[2]:.2f}{budget}")  # fmt: skip
    return table, lines


def versions(checkout: Path | None) -> str:
    found = []
    for package in ("fastai", "medmnist"):  # medclass, torch, timm and lightning are in machine_line()
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    authors = "not given"
    if checkout is not None:
        done = subprocess.run(
            ["git", "-C", str(checkout), "log", "-1", "--format=%H %cs"], capture_output=True, text=True
        )
        authors = done.stdout.strip() if done.returncode == 0 else "not a git checkout (commit unknown)"
    return ", ".join(found) + f"; MedMNIST/experiments {authors}"


def merged_runs(path: Path, runs: list[Run], fresh: bool) -> list[Run]:
    """The runs already in ``path`` (unless ``fresh``) with the new ones in place of any of the same set, tool and
    seed, in the order of SETS, TOOLS and seeds: sets can be run one invocation (or one day) at a time."""
    kept: list[Run] = []
    if path.exists() and not fresh:
        with path.open(newline="") as handle:
            kept = [Run.from_row(row) for row in csv.DictReader(handle)]
    new = {r.key for r in runs}
    order = {name: i for i, name in enumerate(SETS)}
    merged = [r for r in kept if r.key not in new and r.set in SETS and r.tool in TOOLS] + runs
    return sorted(merged, key=lambda r: (order[r.set], TOOLS.index(r.tool), r.seed))


def write_results(out: Path, runs: list[Run], fresh: bool = False) -> str:
    out.mkdir(parents=True, exist_ok=True)
    runs = merged_runs(out / "peers.csv", runs, fresh)
    table, lines = summarise(runs)
    names = [f.name for f in fields(Run)]
    with (out / "peers.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for r in runs:
            writer.writerow({**asdict(r), "details": json.dumps(r.details)})
    machines = dict.fromkeys(f"- {r.machine}; {r.versions}" for r in runs if r.machine)
    commands = dict.fromkeys(f"- {r.date}: `{r.command}`" for r in runs if r.command)
    text = [
        "# medclass against its peers",
        "",
        "Test AUC / ACC of each tool's best-validation model (mean +- SD over the seeds; MedMNIST's getAUC / getACC "
        "for every tool), CPU seconds per run (user + system of the run's processes) and wall seconds.",
        "",
        "| set | tool | runs | epochs | test AUC | test ACC | CPU s | wall s | note |",
        "|---|---|---|---:|---|---|---:|---:|---|",
        *(
            f"| {r['set']} | {r['tool']} | {r['runs']} | {r['epochs']} | {r['auc']} | {r['acc']} | {r['cpu_s']} | "
            f"{r['wall_s']} | {r['note']} |"
            for r in table
        ),
        "",
        "Ratios (medclass / peer, of the means; AUC and ACC above 1 and CPU below 1 favour medclass):",
        "",
        *lines,
        "",
        "Machines and versions:",
        "",
        *machines,
        "",
        "Commands (from the repository root, `MEDCLASS_DATA` set; each rewrites its own rows of this table):",
        "",
        *commands,
        "",
    ]
    (out / "peers.md").write_text("\n".join(text))
    return "\n".join(text)


def parse_list(text: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    chosen = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in allowed]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown) or '(none)'}: use {', '.join(allowed)}")
    return chosen


def main(argv: list[str] | None = None) -> list[Run]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=lambda t: parse_list(t, list(SETS), "set"), default=list(SETS))
    parser.add_argument("--tools", type=lambda t: parse_list(t, TOOLS, "tool"), default=list(TOOLS))
    parser.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",") if s.strip()], default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, help="epochs for every tool (default: each set's medclass recipe)")
    parser.add_argument("--medmnist-experiments", type=Path, help="a checkout of github.com/MedMNIST/experiments")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each with 1/J of the cores")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, help=f"where runs go (default {DEFAULT_WORK.relative_to(REPO)})")
    parser.add_argument("--fresh", action="store_true", help="start a new table instead of updating its rows")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return []
    cores = len(os.sched_getaffinity(0))
    jobs = max(1, min(args.jobs, cores))
    threads = max(1, cores // jobs)
    checkout = args.medmnist_experiments.resolve() if args.medmnist_experiments else None
    work = (args.work or DEFAULT_WORK).resolve() / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    runs, pending = [], []
    for name in args.sets:
        peer_set = SETS[name]
        epochs = args.epochs or recipe(peer_set)["epochs"]
        for tool in args.tools:
            reason = skip_reason(tool, peer_set, checkout)
            for seed in args.seeds:
                run = Run(name, tool, seed, epochs, threads=threads)
                if reason:
                    run.status = f"skipped: {reason}"
                else:
                    pending.append(run)
                runs.append(run)
    command = "python benchmarks/peers.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    stamp = {"date": dt.date.today().isoformat(), "command": command, "versions": versions(checkout),
             "machine": f"{machine_line()}; {jobs} run(s) at a time with {threads} thread(s) each; medclass commit "
                        f"{git_state()}"}  # fmt: skip
    for run in runs:
        for name, value in stamp.items():
            setattr(run, name, value)
    print(f"{len(pending)} runs, {jobs} at a time with {threads} threads each; work in {work}", flush=True)

    def one(run: Run) -> Run:
        launch(run, work / f"{run.set}-{run.tool}-seed{run.seed}", checkout)
        print(f"{run.set} {run.tool} seed {run.seed}: {run.status}, AUC {run.test_auc}, ACC {run.test_acc}, "
              f"CPU {run.cpu_s:.0f} s, wall {run.wall_s:.0f} s", flush=True)  # fmt: skip
        return run

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, pending))
    print(write_results(args.out, runs, args.fresh))
    return runs


if __name__ == "__main__":
    main()
