"""MedMNIST reproduction: the MedMNIST v2 paper's training recipe and medclass's own recommended recipe on each
MedMNIST set in the shared data (BloodMNIST, BreastMNIST, RetinaMNIST npz files; DermaMNIST from its JPEG copy),
side by side with the paper's published test numbers.

    export MEDCLASS_DATA=$PWD/../shared/data
    python benchmarks/medmnist_reproduce.py [--sets blood,breast,retina,derma] [--recipes paper,medclass]
        [--max-epochs N] [--cap bloodmnist=30,dermamnist=30] [--seed S] [--out DIR] [--runs DIR] [--fresh]
        [--dry-run]

Recipes, trained through medclass's Python API (``load_config`` + ``train``, what ``medclass train`` runs):

- ``paper``: ``configs/reproduce/paper_<set>.yaml``, the paper's recipe (ResNet-18 from scratch at 28 px, Adam 1e-3,
  batch 128, 100 epochs with the learning rate x0.1 at epochs 50 and 75, no augmentation, best validation AUC).
- ``medclass``: the repository's recommended config for the set, ``configs/<set>.yaml`` (``dermamnist_jpeg.yaml``
  for DermaMNIST), unchanged but for the epoch cap.

Measured per run: test AUC and ACC of the best-validation checkpoint (MedMNIST's own metric definitions), epochs
run, best epoch, wall time (data loading, training and evaluation), seconds per epoch and training images per
second (epoch time includes validation). ``--max-epochs`` caps both recipes (``--cap set=N,...`` per set); a
capped paper recipe keeps its learning-rate decays at 50% and 75% of the shorter run, as the paper's code does
(milestones = [0.5, 0.75] x epochs). Nothing is chosen on the test split.

Writes ``<out>/medmnist_reproduce.md`` and ``.csv`` (default ``benchmarks/results/medmnist_reproduce``), runs go to
``--runs`` (default ``runs/medmnist_reproduce``, git-ignored). Rows already in ``<out>`` for sets and recipes not
run now are kept (``--fresh`` starts a new table), so each row can be regenerated alone with the command the
table lists for it. A set whose data is missing is reported on one line and the others still run.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "medmnist_reproduce"
DEFAULT_RUNS = REPO / "runs" / "medmnist_reproduce"
TABLE_NAME = "medmnist_reproduce"

CITATION = (
    "MedMNIST v2 (J. Yang et al., MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image "
    "classification, Scientific Data 10, 41, 2023), Table of 2D results; copied from ../shared/data/README.md"
)
# Test (AUC, ACC) of the paper's "ResNet-18 (28)" row, and the best figure per metric of any method in its table.
PAPER_RESNET18_28 = {
    "bloodmnist": (0.998, 0.958),
    "breastmnist": (0.901, 0.863),
    "retinamnist": (0.717, 0.524),
    "dermamnist": (0.917, 0.735),
}
PAPER_BEST = {
    "bloodmnist": (0.998, 0.966),
    "breastmnist": (0.919, 0.863),
    "retinamnist": (0.750, 0.531),
    "dermamnist": (0.920, 0.768),
}
PAPER_EPOCHS = 100
PAPER_MILESTONES = (0.5, 0.75)  # fractions of the run after which the paper's learning rate drops x0.1


@dataclass(frozen=True)
class DataSet:
    name: str  # the MedMNIST flag the paper's numbers belong to
    label: str  # how the table names the data
    configs: dict[str, str]  # recipe -> config file, relative to the repository root


SETS = {
    s.name: s
    for s in (
        DataSet("bloodmnist", "BloodMNIST (npz)",
                {"paper": "configs/reproduce/paper_bloodmnist.yaml", "medclass": "configs/bloodmnist.yaml"}),
        DataSet("breastmnist", "BreastMNIST (npz)",
                {"paper": "configs/reproduce/paper_breastmnist.yaml", "medclass": "configs/breastmnist.yaml"}),
        DataSet("retinamnist", "RetinaMNIST (npz)",
                {"paper": "configs/reproduce/paper_retinamnist.yaml", "medclass": "configs/retinamnist.yaml"}),
        DataSet("dermamnist", "DermaMNIST (JPEG copy)",
                {"paper": "configs/reproduce/paper_dermamnist_jpeg.yaml", "medclass": "configs/dermamnist_jpeg.yaml"}),
    )
}  # fmt: skip
RECIPES = ("paper", "medclass")
COLUMNS = (
    "set", "recipe", "config", "model", "epochs_run", "epochs_recipe", "cap", "best_epoch", "monitor", "best_val",
    "test_auc", "test_auc_low", "test_auc_high", "test_acc", "test_acc_low", "test_acc_high",
    "seconds_per_epoch", "images_per_s", "wall_min", "load_avg", "run_dir", "machine", "date", "command",
    "train_command", "stages",
)  # fmt: skip


def resolve_set(name: str) -> str:
    """``blood``, ``BloodMNIST`` or ``bloodmnist`` -> ``bloodmnist``."""
    key = name.strip().lower()
    matches = [s for s in SETS if s == key or s.startswith(key) or s == key + "mnist"]
    if len(matches) != 1:
        raise argparse.ArgumentTypeError(f"unknown set {name!r}: choose from {', '.join(SETS)}")
    return matches[0]


def parse_sets(text: str) -> list[str]:
    chosen = {resolve_set(part) for part in text.split(",") if part.strip()}
    return [s for s in SETS if s in chosen]


def parse_recipes(text: str) -> list[str]:
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = chosen - set(RECIPES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown recipe(s) {', '.join(sorted(unknown))}: use {', '.join(RECIPES)}")
    return [r for r in RECIPES if r in chosen]


def parse_caps(text: str) -> dict[str, int]:
    caps = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"--cap {part!r}: write set=EPOCHS, e.g. bloodmnist=30")
        caps[resolve_set(name)] = int(value)
    return caps


def scaled_stages(stages: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """The stages of a staged recipe squeezed into ``epochs``: every stage boundary stays at the same fraction of
    the run (rounded down, the first stage at least one epoch); stages left with no epochs are dropped."""
    total = sum(stage["epochs"] for stage in stages)
    ends, done, previous = [], 0, 0
    for index, stage in enumerate(stages):
        done += stage["epochs"]
        end = epochs if index == len(stages) - 1 else max(1, epochs * done // total)
        ends.append(max(previous, min(end, epochs)))
        previous = ends[-1]
    starts = [0, *ends[:-1]]
    return [{**stage, "epochs": end - start} for stage, start, end in zip(stages, starts, ends, strict=True)
            if end > start]  # fmt: skip


def flow_yaml(value: Any) -> str:
    """A value as a one-line YAML string, for a ``key=value`` override."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf).strip()


@dataclass
class Plan:
    set: str
    recipe: str
    config: str
    overrides: list[str]  # what the recipe changes (the epoch cap) plus where the run goes
    epochs: int
    epochs_recipe: int
    cap: int | None
    stage_note: str

    @property
    def capped(self) -> bool:
        return self.epochs < self.epochs_recipe


def plan_run(name: str, recipe: str, cap: int | None, runs: Path, seed: int | None) -> Plan:
    from medclass import load_config

    path = SETS[name].configs[recipe]
    base = load_config(REPO / path)
    recipe_epochs = base.total_epochs
    epochs = min(recipe_epochs, cap) if cap else recipe_epochs
    overrides: list[str] = []
    stage_note = ""
    if epochs < recipe_epochs:
        if base.stages:
            stages = scaled_stages([s.model_dump(exclude_unset=True) for s in base.stages], epochs)
            overrides += [f"stages={flow_yaml(stages)}", "trainer.max_epochs=null"]
            stage_note = "+".join(str(s["epochs"]) for s in stages)
        else:
            overrides.append(f"trainer.max_epochs={epochs}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    if base.data.source == "medmnist":
        overrides.append("data.download=false")  # the benchmark reads the shared files; never the network
    overrides.append(f"output_dir={runs / recipe}")
    return Plan(name, recipe, path, overrides, epochs, recipe_epochs, cap, stage_note)


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "no GPU"
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "timm", "lightning", "medclass"))
    return f"{cpu}, {usable} cores ({torch.get_num_threads()} torch threads), {gpu}; {platform.system()}; {versions}"


def git_state() -> str:
    """Short commit of the checkout, and whether tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" (with uncommitted changes)" if dirty else "")


def row_command(name: str, recipe: str, max_epochs: int | None, seed: int | None, out: Path, runs: Path) -> str:
    """The benchmark command that trains one row again (and rewrites it in the table)."""
    parts = ["python", "benchmarks/medmnist_reproduce.py", "--sets", name, "--recipes", recipe]
    if max_epochs:
        parts += ["--max-epochs", str(max_epochs)]
    if seed is not None:
        parts += ["--seed", str(seed)]
    if out.resolve() != DEFAULT_OUT:
        parts += ["--out", shown(out)]
    if runs.resolve() != DEFAULT_RUNS:
        parts += ["--runs", shown(runs)]
    return shlex.join(parts)


def shown(path: Path | str) -> str:
    """A path as the table shows it: relative to the repository root when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def train_command(plan: Plan) -> str:
    overrides = [o for o in plan.overrides if not o.startswith(("output_dir=", "data.download="))]
    return shlex.join(["medclass", "train", "-c", plan.config, *overrides])


def epoch_timing(run_dir: Path) -> tuple[float | None, float | None]:
    """Median seconds per epoch (validation included) and training images per second over all epochs."""
    try:
        seconds = [float(v) for v in json.loads((run_dir / "run.json").read_text()).get("epoch_seconds", {}).values()]
        n_train = json.loads((run_dir / "data.json").read_text())["splits"]["train"]["n"]
    except (OSError, KeyError, ValueError):
        return None, None
    if not seconds:
        return None, None
    median = sorted(seconds)[len(seconds) // 2]
    return median, n_train * len(seconds) / sum(seconds)


def run_one(plan: Plan, machine: str, command: str) -> dict[str, Any]:
    from medclass import load_config, run_experiment

    config = load_config(REPO / plan.config, plan.overrides)
    started = time.perf_counter()
    result = run_experiment(config, progress=False)
    wall = time.perf_counter() - started
    assert result is not None  # a single-process run always reports
    status = json.loads((result.run_dir / "run.json").read_text())
    metrics, intervals = result.test.metrics, result.test.intervals
    per_epoch, images_per_s = epoch_timing(result.run_dir)
    auc_ci = intervals.get("auc", (None, None))
    acc_ci = intervals.get("acc", (None, None))
    return {
        "set": plan.set, "recipe": plan.recipe, "config": plan.config, "model": config.model.bare_name,
        "epochs_run": status.get("epochs", plan.epochs), "epochs_recipe": plan.epochs_recipe,
        "cap": plan.cap if plan.capped else "", "best_epoch": result.best_epoch,
        "monitor": result.monitor, "best_val": result.best_score,
        "test_auc": metrics["auc"], "test_auc_low": auc_ci[0], "test_auc_high": auc_ci[1],
        "test_acc": metrics["acc"], "test_acc_low": acc_ci[0], "test_acc_high": acc_ci[1],
        "seconds_per_epoch": per_epoch, "images_per_s": images_per_s, "wall_min": wall / 60,
        "load_avg": round(os.getloadavg()[1], 2) if hasattr(os, "getloadavg") else None,
        "run_dir": shown(result.run_dir), "machine": machine,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "train_command": train_command(plan),
        "stages": plan.stage_note,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# The table


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})


def number(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def verdict(ours: float | None, paper: float) -> str:
    """Compared at the paper's precision (3 decimals): a value that rounds to the paper's figure is a tie."""
    if ours is None:
        return "-"
    mine = round(ours, 3)
    return "yes" if mine > paper + 1e-9 else "tie" if abs(mine - paper) < 1e-9 else "no"


def fmt(value: Any, digits: int = 3) -> str:
    value = number(value)
    return "-" if value is None else f"{value:.{digits}f}"


def pair(values: tuple[float, float]) -> str:
    return " / ".join(f"{v:.3f}".lstrip("0") for v in values)


def markdown(rows: list[dict[str, Any]], command: str, data_dir: str, failures: list[str]) -> str:
    lines = [
        "# MedMNIST: the paper's recipe and medclass's recipe against the paper's numbers",
        "",
        f'Reference: {CITATION}. Test AUC / ACC; "paper R18 (28)" is the paper\'s ResNet-18 (28) row, "best of '
        'paper" the best figure per metric of any method in its table. Ours: test split, checkpoint of the best '
        "validation epoch, MedMNIST's own ACC/AUC definitions; one seed per row.",
        "",
    ]
    machines = sorted({row.get("machine", "") for row in rows if row.get("machine")})
    for machine in machines or ["-"]:
        own = [row for row in rows if row.get("machine") == machine]
        dates = sorted({str(row.get("date", ""))[:10] for row in own if row.get("date")})
        about = [", ".join(dates)] if dates else []
        if len(machines) > 1:  # say which rows ran where
            about.append("rows " + ", ".join(f"{row['set']}/{row['recipe']}" for row in own))
        lines.append(f"Machine: {machine}" + (f" ({'; '.join(about)})" if about else ""))
    invocation = (
        "Latest invocation (from the repository root, `MEDCLASS_DATA` set; it updates its own rows, "
        f"the others keep theirs: each row's command is under Commands): `{command}`"
    )
    lines += ["", f"Data: `{data_dir}`. Code: medclass {git_state()}.", "", invocation, ""]
    capped = [row for row in rows if str(row.get("cap", "")).strip()]
    if capped:
        caps = ", ".join(
            f"{r['set']}/{r['recipe']} {r['epochs_run']} of {r['epochs_recipe']}"
            + (f" (stages {r['stages']})" if str(r.get("stages", "")).strip() else "")
            for r in capped
        )
        lines += [
            f"**Epochs capped** for a CPU run: {caps}. A capped paper recipe keeps its two learning-rate drops "
            "(x0.1) at 50% and 75% of the shorter run (after epoch floor(0.5 N) and floor(0.75 N); stage lengths "
            "in brackets), as the paper's code places them (milestones = [0.5, 0.75] x epochs); "
            "medclass's cosine schedules span the shorter run. Capped rows are not the paper's full 100 epochs "
            "and say less about the recipe than about the time it had.",
            "",
        ]
    lines += [
        "| set | recipe | epochs (cap) | best epoch | test AUC | test ACC | paper R18 (28) AUC / ACC "
        "| best of paper AUC / ACC | beats best of paper (AUC / ACC)? | s / epoch | images/s | wall min |",
        "|---|---|---|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        name = row["set"]
        auc, acc = number(row.get("test_auc")), number(row.get("test_acc"))
        best = PAPER_BEST[name]
        cap = str(row.get("cap", "")).strip()
        epochs = f"{row['epochs_run']} (cap {cap}, recipe {row['epochs_recipe']})" if cap else f"{row['epochs_run']}"
        lines.append(
            f"| {SETS[name].label} | {row['recipe']} ({row.get('model') or '-'}, `{row['config']}`) | {epochs} "
            f"| {row.get('best_epoch') or '-'} "
            f"| {fmt(auc, 4)} | {fmt(acc, 4)} | {pair(PAPER_RESNET18_28[name])} | {pair(best)} "
            f"| {verdict(auc, best[0])} / {verdict(acc, best[1])} | {fmt(row.get('seconds_per_epoch'), 1)} "
            f"| {fmt(row.get('images_per_s'), 0)} | {fmt(row.get('wall_min'), 1)} |"
        )
    lines += [
        "",
        "Notes:",
        "",
        '- "beats" compares at the paper\'s precision (3 decimals): `tie` means equal after rounding. s / epoch is '
        "the median epoch (training + validation); images/s is training images over total epoch time; wall min "
        "covers data loading, training and the test evaluation. The CSV's `load_avg` is the machine's 5-minute "
        "load average when the run ended: above the core count, other work shared the CPU and the times are high.",
        "- paper recipe (`configs/reproduce/paper_<set>.yaml`): ResNet-18 from scratch at 28 px, Adam lr 1e-3 "
        "(no weight decay), batch 128, 100 epochs, lr x0.1 at epochs 50 and 75 (three constant-rate stages that "
        "share one Adam state: `scheduler.name: step` decays every `step_size` epochs and cannot place two uneven "
        "milestones), no augmentation, mean = std = 0.5, no label smoothing, plain cross-entropy (also for "
        "RetinaMNIST's ordinal grades), BreastMNIST with one input channel, checkpoint of the best validation AUC.",
        '- Model: the paper\'s "ResNet-18 (28)" is the CIFAR variant of its code (3x3 stride-1 stem, no max-pool: '
        "last feature map 4x4 at 28 px), medclass's `resnet18_cifar`; timm's `resnet18` (the model column says "
        "which a row used) has the ImageNet stem (last feature map 1x1 at 28 px, about 16x fewer operations). "
        "A row whose model differs from its config's was trained before the config changed: add "
        "`model.name=<model>` to its command to train it as it was.",
        "- Differences that remain: the authors' script (github.com/MedMNIST/experiments, "
        "`MedMNIST2D/train_and_eval_pytorch.py`) evaluates the best validation epoch too: since commit 8b0f553 "
        "(2023-05-18) it keeps `deepcopy(model)` of that epoch (before it, `best_model = model` kept a reference to "
        "the live model, so the last epoch was evaluated); checked against commit 70b6b3a (2024-07-11), the newest, "
        "which `benchmarks/peers.py` runs beside medclass. It adds no augmentation and sets no seed. DermaMNIST "
        "here is the JPEG re-encoding in the shared data (pixels differ slightly from the official npz the paper "
        "used).",
        "- medclass recipe: the shipped `configs/<set>.yaml` (`configs/dermamnist_jpeg.yaml` for DermaMNIST) as "
        "they are, apart from an epoch cap; each config picks its best epoch on validation (`checkpoint.monitor`, "
        "the `monitor` column of the CSV).",
    ]
    if failures:
        lines += ["", "Not run:", "", *[f"- {line}" for line in failures]]
    lines += [
        "",
        "## Commands",
        "",
        "Each row alone (from the repository root, `MEDCLASS_DATA` set); the benchmark command rewrites its row in "
        "this table, the `medclass train` line is the same run by the CLI (add `output_dir=...`).",
        "",
    ]
    for row in rows:
        lines += [f"- {SETS[row['set']].label}, {row['recipe']}: `{row['command']}`",
                  f"  - `{row['train_command']}`", f"  - run: `{row['run_dir']}`"]  # fmt: skip
    return "\n".join(lines) + "\n"


def order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names, recipes = list(SETS), list(RECIPES)
    return sorted(rows, key=lambda r: (names.index(r["set"]), recipes.index(r["recipe"])))


def write_table(out: Path, rows: list[dict[str, Any]], command: str, data_dir: str, failures: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{TABLE_NAME}.csv", rows)
    path = out / f"{TABLE_NAME}.md"
    path.write_text(markdown(rows, command, data_dir, failures), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=parse_sets, default=list(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--recipes", type=parse_recipes, default=list(RECIPES), help="paper,medclass")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap every recipe's epochs (CPU runs)")
    parser.add_argument("--cap", type=parse_caps, default={}, help="per-set caps, e.g. bloodmnist=30,dermamnist=30")
    parser.add_argument("--seed", type=int, default=None, help="seed for both recipes (default: each config's own)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the table goes")
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="where the run directories go")
    parser.add_argument("--fresh", action="store_true", help="start a new table instead of updating rows in --out")
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs and commands only")
    args = parser.parse_args(argv)
    if args.max_epochs is not None and args.max_epochs < 1:
        parser.error("--max-epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if not os.environ.get("MEDCLASS_DATA") and (REPO.parent / "shared" / "data").is_dir():
        os.environ["MEDCLASS_DATA"] = str(REPO.parent / "shared" / "data")  # the README's default layout
    data_dir = os.environ.get("MEDCLASS_DATA", "(MEDCLASS_DATA not set)")
    import lightning  # noqa: F401 - Lightning sets its loggers' levels on import; lower them after it

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    from medclass import UserError

    out, runs = args.out.resolve(), args.runs.resolve()
    command = shlex.join(["python", "benchmarks/medmnist_reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    machine = "" if args.dry_run else machine_line()
    rows = {} if args.fresh else {(r["set"], r["recipe"]): r for r in read_rows(out / f"{TABLE_NAME}.csv")}
    failures: list[str] = []
    total = time.perf_counter()
    for name in args.sets:
        cap = args.cap.get(name, args.max_epochs)
        for recipe in args.recipes:
            try:
                plan = plan_run(name, recipe, cap, runs, args.seed)
            except UserError as exc:
                failures.append(f"{name}/{recipe}: {exc}")
                print(f"{name}/{recipe}: not run: {exc}", flush=True)
                continue
            again = row_command(name, recipe, plan.epochs if plan.capped else None, args.seed, out, runs)
            epochs = f"{plan.epochs} epoch{'s' * (plan.epochs != 1)}" + (
                f" (capped from {plan.epochs_recipe})" if plan.capped else ""
            )
            print(f"{name}/{recipe}: {epochs}: {train_command(plan)}", flush=True)
            if args.dry_run:
                continue
            try:
                row = run_one(plan, machine, again)
            except UserError as exc:  # missing data, bad config: one line, the other sets go on
                failures.append(f"{name}/{recipe}: {exc}")
                print(f"{name}/{recipe}: not run: {exc}", flush=True)
                continue
            rows[(name, recipe)] = row
            print(f"{name}/{recipe}: test AUC {row['test_auc']:.4f}, ACC {row['test_acc']:.4f}, best epoch "
                  f"{row['best_epoch']}, {row['wall_min']:.1f} min", flush=True)  # fmt: skip
            write_table(out, order(list(rows.values())), command, data_dir, failures)  # after every run
    if args.dry_run:
        return []
    path = write_table(out, order(list(rows.values())), command, data_dir, failures)
    print(f"table: {path} ({(time.perf_counter() - total) / 60:.1f} min)")
    return order(list(rows.values()))


if __name__ == "__main__":
    main()
