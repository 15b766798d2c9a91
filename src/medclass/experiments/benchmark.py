"""``medclass benchmark``: train and evaluate every model of a config's ``models:`` list in turn, on the same data
and split, and write a leaderboard. A model that fails is reported in the leaderboard and the others go on."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medclass.config import ExperimentConfig, validate_config
from medclass.config.loading import apply_overrides, config_to_dict
from medclass.errors import ConfigError, UserError
from medclass.evaluation.leaderboard import write_leaderboard
from medclass.experiments.pipeline import run_experiment
from medclass.run_dir import RunDir
from medclass.wording import file_slug

log = logging.getLogger("medclass")


@dataclass
class BenchmarkRow:
    label: str
    model: str
    status: str  # "ok" or "failed"
    metrics: dict[str, float] = field(default_factory=dict)
    parameters: int | None = None
    images_per_second: float | None = None
    train_minutes: float | None = None
    best_epoch: int | None = None
    run_dir: str | None = None
    error: str | None = None


@dataclass
class BenchmarkResult:
    folder: Path
    rows: list[BenchmarkRow]
    files: dict[str, Path]


def model_configs(config: ExperimentConfig) -> list[tuple[str, ExperimentConfig | Exception]]:
    """(label, config) per entry: the shared config with the entry's model and overrides (or the error they give)."""
    if not config.models:
        raise ConfigError("models: the config lists no models to benchmark; add models: [{name: resnet18}, ...]")
    base = config_to_dict(config)
    base.pop("models")
    if base["data"]["input_size"] == type(config.data).default_input_size(base["data"]):
        base["data"]["input_size"] = None  # it follows the source's default: an entry that changes data.size moves it
    entries = []
    for entry in config.models:
        label = entry.label or entry.name
        data = apply_overrides(base, [f"model.name={entry.name}"])
        data = apply_overrides(data, [f"{key}={_yaml(value)}" for key, value in entry.overrides.items()])
        data["experiment"] = f"{config.experiment}"
        try:
            entries.append((label, validate_config(data, f"models: {label}")))
        except ConfigError as exc:
            entries.append((label, exc))
    return entries


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def run_benchmark(config: ExperimentConfig, progress: bool | None = None) -> BenchmarkResult:
    folder = RunDir.create(config.output_dir, f"{config.experiment}-benchmark").path
    rows: list[BenchmarkRow] = []
    used: set[str] = set()
    for label, model_config in model_configs(config):
        if isinstance(model_config, Exception):
            rows.append(BenchmarkRow(label, label, "failed", error=str(model_config)))
            continue
        name, n = file_slug(label, "model"), 2
        while name in used:  # the same model twice (other overrides): each entry gets its own folder
            name, n = f"{file_slug(label, 'model')}-{n}", n + 1
        used.add(name)
        model_config = model_config.model_copy(update={"output_dir": folder, "experiment": name})
        log.info("benchmark: %s", label)
        started = time.perf_counter()
        try:
            result = run_experiment(model_config, progress=progress)
        except UserError as exc:
            rows.append(BenchmarkRow(label, model_config.model.name, "failed", error=str(exc)))
            log.warning("benchmark: %s failed: %s", label, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - one broken model must not stop the others; the traceback is kept
            rows.append(BenchmarkRow(label, model_config.model.name, "failed", error=f"{type(exc).__name__}: {exc}"))
            log.warning("benchmark: %s failed:\n%s", label, traceback.format_exc())
            continue
        if result is None:  # an extra process of a distributed run
            continue
        parameters = RunDir(result.run_dir).read_status().get("parameters")
        rows.append(
            BenchmarkRow(
                label,
                model_config.model.name,
                "ok",
                metrics=result.test.metrics,
                parameters=parameters,
                images_per_second=result.test.extra.get("images_per_second"),
                train_minutes=round((time.perf_counter() - started) / 60, 2),
                best_epoch=result.best_epoch,
                run_dir=str(result.run_dir),
            )  # fmt: skip
        )
    files = write_leaderboard(folder, rows, config.checkpoint.monitor)
    return BenchmarkResult(folder, rows, files)
