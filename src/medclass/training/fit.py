"""``train``: config in, run directory out, with the held-out test evaluation of the best checkpoint."""

from __future__ import annotations

import datetime as _dt
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L

from medclass.config import ExperimentConfig, MedMNISTData
from medclass.data import ClassificationDataModule, load_dataset
from medclass.data.cache import cache_root
from medclass.data.stats import dataset_stats
from medclass.environment import collect_environment
from medclass.errors import UserError
from medclass.evaluation import EvaluationResult, evaluate_run
from medclass.models import check_model_name
from medclass.run_dir import RunDir, write_split_files
from medclass.training.module import ClassificationModule
from medclass.training.trainer import build_trainer

log = logging.getLogger("medclass")


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int | None
    best_score: float | None
    monitor: str
    duration_s: float
    test: EvaluationResult


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def train(config: ExperimentConfig, progress: bool | None = None) -> TrainResult:
    """Train the model the config describes, keep the best validation epoch, and evaluate it on the test split."""
    started = time.perf_counter()
    check_model_name(config.model.name)  # fail before loading data when the model name is wrong
    L.seed_everything(config.seed, workers=True, verbose=False)
    dataset = load_dataset(config.data)
    mean = std = None
    if config.data.normalization == "dataset" and config.data.mean is None:
        stats = dataset_stats(dataset, cache_root(getattr(config.data, "cache_dir", None)))
        mean, std = stats["mean"], stats["std"]
    module = ClassificationModule.from_config(config, dataset.task, dataset.classes, mean, std)

    run = RunDir.create(config.output_dir, config.experiment)
    log.info("run directory: %s", run.path)
    run.update_status(status="running", started=_now(), experiment=config.experiment)
    if isinstance(config.data, MedMNISTData) and config.data.root is None and "root" in dataset.source:
        # Record where the data was found, so evaluating the run later does not depend on MEDCLASS_DATA.
        config = config.model_copy(
            update={"data": config.data.model_copy(update={"root": Path(dataset.source["root"])})}
        )
    run.write_config(config)
    run.write_json("data.json", dataset.summary())
    write_split_files(run, dataset)
    run.write_json("preprocessing.json", {k: module.metadata[k] for k in ("in_chans", "image_size", "mean", "std")})
    run.write_json("environment.json", collect_environment(config.seed))
    n_params = sum(p.numel() for p in module.parameters())
    log.info(
        "%s: %s task, %d classes, %s images | model %s, %.2fM parameters",
        dataset.name, dataset.task, len(dataset.classes),
        " / ".join(f"{len(s)} {n}" for n, s in dataset.splits.items()), config.model.name, n_params / 1e6,
    )  # fmt: skip

    try:
        trainer = build_trainer(config, run, progress)
        with warnings.catch_warnings():
            # In-memory arrays need no loader workers; Lightning's advice to add some does not apply here.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer.fit(module, datamodule=ClassificationDataModule(dataset, config.data))
    except UserError as exc:
        run.update_status(status="failed", error=str(exc), finished=_now())
        raise

    checkpoint_cb = trainer.checkpoint_callback
    score = checkpoint_cb.best_model_score if checkpoint_cb is not None else None
    best_score = float(score) if score is not None else None
    best_epoch = _best_epoch(run)
    monitor = f"val/{config.checkpoint.monitor}"
    run.update_status(
        status="trained", trained=_now(), epochs=trainer.current_epoch,
        monitor=monitor, best_epoch=best_epoch, best_score=best_score,
    )  # fmt: skip
    test = evaluate_run(run.path, "best", "test", dataset=dataset)
    duration = time.perf_counter() - started
    run.update_status(status="finished", finished=_now(), duration_s=round(duration, 1))
    return TrainResult(
        run_dir=run.path,
        best_epoch=best_epoch,
        best_score=best_score,
        monitor=monitor,
        duration_s=duration,
        test=test,
    )


def _best_epoch(run: RunDir) -> int | None:
    from medclass.inference import read_checkpoint

    path = run.checkpoint_path("best")
    if not path.is_file():
        return None
    epoch = read_checkpoint(path).get("epoch")
    return int(epoch) + 1 if epoch is not None else None
