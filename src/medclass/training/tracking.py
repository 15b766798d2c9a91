"""Experiment trackers: Lightning's TensorBoard, MLflow and W&B loggers, switched on in the config's tracking
section, each wrapped so that a failing tracker warns once and training goes on without it.

MLflow defaults to a local SQLite store next to the runs (MLflow 3 no longer accepts plain ``./mlruns`` folders
without an opt-out); a remote tracking URI is checked for reachability before training starts, so an unreachable
server costs a few seconds and one warning, never a hang. After the test evaluation, MLflow also receives the
test metrics, the report, the run's result files and the best checkpoint; W&B receives the test metrics."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from medclass.chatter import third_party_wanted
from medclass.config import ExperimentConfig, config_to_dict
from medclass.config.reporting import artifact_location
from medclass.run_dir import RunDir

log = logging.getLogger("medclass")
REACHABILITY_TIMEOUT_S = 5.0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class GuardedLogger(Logger):
    """Delegates to a Lightning logger; the first exception it raises becomes one warning and switches it off.

    Lightning has no such option: an exception in a logger ends the fit. Tracking must never cost a training run."""

    def __init__(self, inner: Logger, label: str) -> None:
        super().__init__()
        self.inner = inner
        self.label = label
        self.failed = False

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The inner logger's ``method(*args, **kwargs)``, guarded."""
        return self.guard(lambda: getattr(self.inner, method)(*args, **kwargs))

    def guard(self, action: Any) -> Any:
        """Run ``action()``; on its first failure warn and switch this tracker off."""
        if self.failed:
            return None
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 -- any tracker failure, by design
            self.failed = True
            log.warning("%s tracking failed (%s); training goes on without it", self.label, _first_line(exc))
            return None

    @property
    def name(self) -> str | None:
        return self.inner.name

    @property
    def version(self) -> int | str | None:
        return self.guard(lambda: self.inner.version)

    @property
    def save_dir(self) -> str | None:
        return self.inner.save_dir

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.call("log_metrics", metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.call("log_hyperparams", params, *args, **kwargs)

    @rank_zero_only
    def save(self) -> None:
        self.call("save")

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.call("finalize", status)


def _reachable(uri: str) -> str | None:
    """None when an http(s) MLflow server answers its /health endpoint, else what is wrong, in words: a server
    that answers with an HTTP error is there but is not an MLflow server (or not at that path); one that does not
    answer is unreachable."""
    try:
        # A fresh opener: urlopen's global one keeps the proxy settings of the process's first request.
        opener = urllib.request.build_opener()
        with opener.open(uri.rstrip("/") + "/health", timeout=REACHABILITY_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        return (f"a server answers at {uri} but not as MLflow does (HTTP {exc.code} for /health): check the address "
                "and port")  # fmt: skip
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"MLflow server {uri} is unreachable ({_first_line(exc)})"


def mlflow_tracking_uri(config: ExperimentConfig) -> str:
    if config.tracking.mlflow_tracking_uri:
        return config.tracking.mlflow_tracking_uri
    return f"sqlite:///{Path(config.output_dir).resolve() / 'mlflow.db'}"


def _mlflow_logger(config: ExperimentConfig, run: RunDir, run_id: str | None) -> Logger | None:
    uri = mlflow_tracking_uri(config)
    if uri.startswith(("http://", "https://")):
        reason = _reachable(uri)
        if reason is not None:
            log.warning("%s; training goes on without MLflow", reason)
            return None
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(
        experiment_name=config.tracking.mlflow_experiment or config.experiment,
        run_name=f"{config.experiment}/{run.path.name}",
        tracking_uri=uri,
        artifact_location=artifact_location(uri),
        tags={"run_dir": str(run.path.resolve()), "model": config.model.name},
        run_id=run_id,
        synchronous=not uri.startswith(("http://", "https://")),  # remote servers: log in the background
    )


def _wandb_logger(config: ExperimentConfig, run: RunDir, run_id: str | None) -> Logger:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    mode = config.tracking.wandb_mode
    offline = mode == "offline" or (mode == "auto" and not os.environ.get("WANDB_API_KEY"))
    logger = WandbLogger(
        project=config.tracking.wandb_project, name=f"{config.experiment}/{run.path.name}", save_dir=str(run.path),
        offline=offline, id=run_id, resume="allow" if run_id else None, log_model=False,
        # W&B's banner, run history and summary (unless --verbose): medclass says what matters
        settings=wandb.Settings(silent=not third_party_wanted()),
    )  # fmt: skip
    # Lightning passes anonymous=None to wandb.init, which W&B now warns about ("The anonymous setting has no
    # effect"); not passing it at all is what W&B asks for.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    where = run.wandb_dir
    log.info("W&B: %s", f"offline, kept in {where} (upload later with `wandb sync {where}/offline-run-*`)" if offline
             else f"online, project {config.tracking.wandb_project}")  # fmt: skip
    return logger


def build_loggers(config: ExperimentConfig, run: RunDir) -> list[GuardedLogger]:
    """The trackers the config switches on, already holding the config as hyperparameters. A tracker that cannot
    even start is left out with a warning. Their run ids are kept in run.json so a resumed run continues them."""
    tracking = config.tracking
    status = run.read_status()
    loggers: list[GuardedLogger] = []
    builders = []
    if tracking.tensorboard:
        builders.append(("TensorBoard", lambda: _tensorboard_logger(run)))
    if tracking.mlflow:
        builders.append(("MLflow", lambda: _mlflow_logger(config, run, status.get("mlflow_run_id"))))
    if tracking.wandb:
        builders.append(("W&B", lambda: _wandb_logger(config, run, status.get("wandb_run_id"))))
    for label, build in builders:
        try:
            inner = build()
        except Exception as exc:  # noqa: BLE001 -- e.g. the package is missing or the store cannot be opened
            log.warning("%s tracking could not start (%s); training goes on without it", label, _first_line(exc))
            continue
        if inner is None:
            continue
        guarded = GuardedLogger(inner, label)
        guarded.log_hyperparams(_flat_params(config))
        if not guarded.failed:
            loggers.append(guarded)
    ids = {f"{key}_run_id": logger.version for key, logger in _by_kind(loggers).items() if key != "tensorboard"}
    if any(ids.values()):
        run.update_status(**{k: v for k, v in ids.items() if v})
    return loggers


def _tensorboard_logger(run: RunDir) -> Logger:
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(run.path), name=run.tensorboard_dir.name, version="", default_hp_metric=False)


def _by_kind(loggers: list[GuardedLogger]) -> dict[str, GuardedLogger]:
    kinds = {"TensorBoard": "tensorboard", "MLflow": "mlflow", "W&B": "wandb"}
    return {kinds[logger.label]: logger for logger in loggers}


def _flat_params(config: ExperimentConfig) -> dict[str, Any]:
    """The config as dotted keys (``optimizer.lr``) with plain values, as trackers show hyperparameters."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)

    walk("", config_to_dict(config))
    return flat


def log_results(loggers: list[GuardedLogger], run: RunDir, test_metrics: dict[str, float], step: int) -> None:
    """After the test evaluation: test metrics to every tracker; report, result files and model to MLflow."""
    prefixed = {f"test/{name}": float(value) for name, value in test_metrics.items()}
    for logger in loggers:
        logger.log_metrics(prefixed, step)
    kinds = _by_kind(loggers)
    mlflow_logger = kinds.get("mlflow")
    if mlflow_logger is not None and not mlflow_logger.failed:
        inner: Any = mlflow_logger.inner
        uploads: list[tuple[Path, str | None]] = [(path, None) for path in run.tracked_files()]
        uploads += [(run.checkpoint_path("best"), "model")]
        for path, folder in uploads:
            if path.is_file():
                mlflow_logger.guard(lambda p=path, f=folder: inner.experiment.log_artifact(inner.run_id, str(p), f))
        report = run.report_dir()
        if report.is_dir():
            mlflow_logger.guard(lambda: inner.experiment.log_artifacts(inner.run_id, str(report), "report"))
    wandb_logger = kinds.get("wandb")
    if wandb_logger is not None:
        experiment: Any = wandb_logger.guard(lambda: wandb_logger.inner.experiment)
        if experiment is not None:
            wandb_logger.guard(lambda: experiment.summary.update(prefixed))
            wandb_logger.guard(experiment.finish)
