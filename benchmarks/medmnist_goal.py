"""MedMNIST accuracy goal: medclass recipes (single models or ensembles of fast members) against the best test
figures of the MedMNIST v2 table, as the mean and SD over several seeds, with each recipe's training time on this
machine (an ensemble counts all its members).

    export MEDCLASS_DATA=$PWD/../shared/data
    python benchmarks/medmnist_goal.py --set breastmnist --config configs/breastmnist.yaml --members 3
        [--seeds 1,2,3] [--name NAME] [--ship] [--out DIR] [--runs DIR] [override=value ...]
    python benchmarks/medmnist_goal.py --set breastmnist --config configs/breastmnist.yaml --ship-only

One invocation is one *attempt*: one recipe (``--config`` plus overrides) on one set, trained once per
seed (``--members K``: an ensemble of K members trained with seeds ``1000 * seed + 1 .. K``, the probabilities
averaged, exactly what ``medclass train --seeds`` packages). Every attempt is appended to
``<out>/medmnist_goal.csv`` with its validation and test numbers; the recipe for a set is *chosen on the validation
numbers only* (AUC and ACC of the final model on the validation split, an ensemble as a whole; the row marked
``shipped``, by ``--ship`` or afterwards by ``--ship-only``), and the table ends with ``beats best of paper: N of
8``, counted from the shipped rows (mean test AUC and ACC over the seeds against the paper's best, at the paper's
three decimals).

Training time is each member's ``train_s`` in run.json (training and validation epochs), summed over members; the
goal allows 20 minutes. Nothing is tuned on the test split: test numbers are read after the recipe is fixed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import logging
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "medmnist_goal"
DEFAULT_RUNS = REPO / "runs" / "medmnist_goal"
LIMIT_MIN = 20.0
COLUMNS = ("attempt", "set", "config", "overrides", "members", "seed", "val_auc", "val_acc", "test_auc", "test_acc",
           "train_min", "run_dir", "machine", "date", "shipped")  # fmt: skip


def _reproduce():
    """The reproduction benchmark's helpers (sets, paper figures, machine line)."""
    spec = importlib.util.spec_from_file_location("medmnist_reproduce", REPO / "benchmarks" / "medmnist_reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_seed(config_path: Path, overrides: list[str], members: int, seed: int, runs: Path) -> dict[str, Any]:
    """Train one seed of the recipe (one model, or an ensemble of ``members``) and read its numbers: validation
    AUC and ACC of the final model (the selection criterion, the same for single models and ensembles), its test
    AUC and ACC, and the training minutes of all its members."""
    from medclass import load_config, run_experiment
    from medclass.data import load_dataset
    from medclass.experiments.series import plan_seeds, run_series
    from medclass.inference.assess import assess_package
    from medclass.inference.package import load_package, run_package
    from medclass.run_dir import RunDir

    config = load_config(config_path, [*overrides, f"output_dir={runs}"])
    if config.data.source == "medmnist":  # the benchmark reads local files only (file sources have no download)
        config = config.model_copy(update={"data": config.data.model_copy(update={"download": False})})
    if members == 1:
        result = run_experiment(config.model_copy(update={"seed": seed}), progress=False)
        package, test, run_dirs = run_package(result.run_dir), result.test.metrics, [result.run_dir]
        where = result.run_dir
    else:
        seeds = [1000 * seed + i for i in range(1, members + 1)]
        series = run_series(
            plan_seeds(config, seeds, folder=runs / f"{config.experiment}-ensemble{members}-seed{seed}")
        )
        package, test = Path(series.ensemble["package"]), series.ensemble["ensemble"]["metrics"]
        run_dirs, where = [row["run_dir"] for row in series.rows], series.folder
    settings = config.evaluation.model_copy(update={"bootstrap": 0})
    val = assess_package(load_package(package), load_dataset(config.data), "val", settings).metrics
    minutes = sum(RunDir(d).read_status()["train_s"] for d in run_dirs) / 60
    return {"val_auc": val["auc"], "val_acc": val["acc"], "test_auc": test["auc"], "test_acc": test["acc"],
            "train_min": minutes, "run_dir": str(where)}  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: _relative(row.get(k, "")) if k == "run_dir" else row.get(k, "") for k in COLUMNS}
                         for row in rows)  # fmt: skip


def _relative(where: str) -> str:
    """A run folder inside this repository as a path relative to it (the table reads the same on every checkout)."""
    path = Path(where)
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else where


def summarise(rows: list[dict[str, str]], reproduce) -> tuple[list[str], int, list[str]]:
    """Markdown lines: every attempt (mean +- SD over its seeds), the count of paper-best figures the shipped
    attempts beat, and a line per shipped attempt saying by how much each figure is beaten or missed."""
    attempts: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        attempts.setdefault((row["set"], row["attempt"]), []).append(row)
    lines = ["| set | attempt | members | seeds | val AUC | val ACC | test AUC | test ACC | train min (per seed) | "
             "best of paper AUC / ACC | beats (AUC / ACC) | shipped |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]  # fmt: skip
    beaten, gaps = 0, []
    for (name, attempt), group in sorted(attempts.items()):

        def stat(key: str, digits: int = 4, group: list[dict[str, str]] = group) -> str:
            values = [float(r[key]) for r in group if r[key] not in ("", "None")]
            if not values:
                return ""
            sd = f" +- {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.{digits}f}{sd}"

        best_auc, best_acc = reproduce.PAPER_BEST[name]
        auc = statistics.mean(float(r["test_auc"]) for r in group)
        acc = statistics.mean(float(r["test_acc"]) for r in group)
        over_time = max(float(r["train_min"]) for r in group) > LIMIT_MIN
        wins = (round(auc, 3) > best_auc and not over_time, round(acc, 3) > best_acc and not over_time)
        shipped = any(r.get("shipped") == "yes" for r in group)
        if shipped:
            beaten += sum(wins)
            gaps.append(
                f"- {name} ({attempt}): "
                + "; ".join(
                    f"{metric} {mean:.4f} vs {best:.3f}: {_verdict(mean, best, won, over_time)}"
                    for metric, mean, best, won in (("AUC", auc, best_auc, wins[0]), ("ACC", acc, best_acc, wins[1]))
                )
            )
        lines.append(
            f"| {name} | {attempt} | {group[0]['members']} | {len(group)} | {stat('val_auc')} | {stat('val_acc')} | "
            f"{stat('test_auc')} | "
            f"{stat('test_acc')} | {stat('train_min', 1)}{' (over the limit)' if over_time else ''} | "
            f"{best_auc:.3f} / {best_acc:.3f} | {'yes' if wins[0] else 'no'} / {'yes' if wins[1] else 'no'} | "
            f"{'yes' if shipped else ''} |"
        )
    return lines, beaten, gaps


def _verdict(mean: float, best: float, won: bool, over_time: bool) -> str:
    if won:
        return f"beaten by {mean - best:.4f}"
    if mean < best:
        return f"short by {best - mean:.4f}"
    return "above, but over the time limit" if over_time else "equal at the paper's three decimals (not counted)"


def write_table(out: Path, rows: list[dict[str, str]], machine: str, reproduce) -> Path:
    lines, beaten, gaps = summarise(rows, reproduce)
    text = [
        "# MedMNIST accuracy goal: medclass recipes against the best of the MedMNIST v2 table", "",
        f"Reference: {reproduce.CITATION}. Test AUC / ACC, mean +- SD over the seeds of each attempt (MedMNIST's "
        "metric definitions, best validation checkpoint). A recipe counts only if its training takes at most "
        f"{LIMIT_MIN:.0f} minutes per seed on this machine (an ensemble: all members).", "",
        f"Machine of the latest attempt: {machine}", "",
        "Attempts are chosen between on the validation columns only (AUC and ACC of the final model, an ensemble "
        "as a whole, on the validation split); `shipped` marks the recipe kept for a set.", "",
        *lines, "",
        "Per-seed rows, commands and run folders: `medmnist_goal.csv`.", "",
        "Where the shipped recipes stand (mean test figure against the paper's best):", "", *gaps, "",
        f"beats best of paper: {beaten} of 8", "",
    ]  # fmt: skip
    path = out / "medmnist_goal.md"
    path.write_text("\n".join(text))
    return path


def _default_name(config: Path) -> str:
    """The config's path under configs/ without .yaml (configs/tuned/breastmnist.yaml: tuned/breastmnist), so
    that two recipes for one set are two attempts."""
    try:
        return config.resolve().relative_to(REPO / "configs").with_suffix("").as_posix()
    except ValueError:
        return config.stem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="The MedMNIST set whose paper figures the recipe is held to.")
    parser.add_argument("--config", required=True, type=Path, help="The recipe: an experiment YAML.")
    parser.add_argument("--members", type=int, default=1, help="Ensemble members per seed (1: a single model).")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--name", help="Name of the attempt; default: the config's path under configs/ + members.")
    parser.add_argument("--ship", action="store_true", help="Mark this attempt as the recipe kept for its set.")
    parser.add_argument(
        "--ship-only",
        action="store_true",
        help="Mark the attempt already in the table as the recipe kept for its set; train nothing.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("overrides", nargs="*", help="Config overrides as key=value.")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    reproduce = _reproduce()
    sets = reproduce.parse_sets(args.set)
    from medclass import load_config

    data = load_config(args.config, args.overrides).data
    if len(sets) != 1 or (data.source == "medmnist" and data.flag != sets[0]):
        parser.error(f"--set {args.set}: the config trains on {getattr(data, 'flag', data.source)}; name its set")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    name = args.name or _default_name(args.config) + (f" x{args.members}" if args.members > 1 else "")
    machine = reproduce.machine_line()
    csv_path = args.out / "medmnist_goal.csv"
    rows = read_rows(csv_path)
    other = next((r for r in rows if r["attempt"] == name and r["config"] != str(args.config)), None)
    if other is not None:  # a rerun replaces its attempt's rows: never another recipe's
        parser.error(f"attempt {name!r} is {other['config']}'s in {csv_path}; give this one another --name")
    if args.ship_only:  # chosen on validation after the attempts ran: only the mark changes
        if not any(r["set"] == sets[0] and r["attempt"] == name for r in rows):
            parser.error(f"--ship-only: no attempt {name!r} for {sets[0]} in {csv_path}")
        for row in rows:
            if row["set"] == sets[0]:
                row["shipped"] = "yes" if row["attempt"] == name else ""
        write_rows(csv_path, rows)
        seeds = []
    for set_name in sets if seeds else []:
        if args.ship:
            for row in rows:
                if row["set"] == set_name:
                    row["shipped"] = ""
        rows = [r for r in rows if not (r["set"] == set_name and r["attempt"] == name)]
        for seed in seeds:
            print(f"{set_name}: {name}, seed {seed}", flush=True)
            result = run_seed(args.config, args.overrides, args.members, seed, args.runs / set_name)
            rows.append({"attempt": name, "set": set_name, "config": str(args.config), "overrides": " ".join(
                args.overrides), "members": args.members, "seed": seed, **result, "machine": machine,
                "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "shipped": "yes" if args.ship else ""})  # fmt: skip
            write_rows(csv_path, rows)
    table = write_table(args.out, rows, machine, reproduce)
    print(table.read_text().rstrip().splitlines()[-1])
    print(f"written: {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
