"""``train``: config in, trained run directory out (status ``trained``: checkpoints, epochs.csv, run files).
``resume``: continue a run directory from its last checkpoint. Evaluating the best checkpoint on the test split
and writing the report come after, in :mod:`medclass.experiments.pipeline`."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch

from medclass.chatter import third_party_wanted
from medclass.config import ExperimentConfig
from medclass.data import ClassificationDataModule, LabelledImages, load_dataset
from medclass.data.cache import cache_root
from medclass.data.stats import dataset_stats
from medclass.data.transforms import flip_policy
from medclass.environment import collect_environment
from medclass.errors import ConfigError, RunInterrupted, UserError, storage_error
from medclass.io import atomic_write_text
from medclass.models import check_model_name
from medclass.run_dir import RunDir
from medclass.tasks import is_single_label
from medclass.training.callbacks import GracefulStop
from medclass.training.hardware import gpu_requested, resolve_precision
from medclass.training.memory import auto_batch_size
from medclass.training.module import ClassificationModule
from medclass.training.network import read_checkpoint
from medclass.training.tracking import GuardedLogger, build_loggers
from medclass.training.trainer import build_trainer
from medclass.wording import limited_epochs, plural

log = logging.getLogger("medclass")
RUN_DIR_ENV = "MEDCLASS_RUN_DIR"  # how processes launched for DDP find the run directory of rank 0


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int | None
    best_score: float | None
    monitor: str
    duration_s: float
    dataset: LabelledImages = field(repr=False)  # the data it trained on, so evaluating next need not load it again
    loggers: list[GuardedLogger] = field(default_factory=list, repr=False)  # trackers, still open for the results
    steps: int = 0


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def is_rank_zero() -> bool:
    """True in the process that owns the run directory (always, without distributed training)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def class_counts(dataset: LabelledImages) -> np.ndarray | tuple[np.ndarray, int]:
    labels = dataset.splits["train"].labels
    if is_single_label(dataset.task):
        return np.bincount(labels, minlength=len(dataset.classes))
    return labels.sum(axis=0), len(labels)  # type: ignore[return-value]


def build_module(config: ExperimentConfig, dataset: LabelledImages) -> ClassificationModule:
    mean = std = None
    if config.data.normalization == "dataset" and config.data.mean is None:
        stats = dataset_stats(dataset, cache_root(config.data.cache_dir))
        mean, std = stats["mean"], stats["std"]
    return ClassificationModule.from_config(
        config, dataset.task, dataset.classes, mean, std, class_counts=class_counts(dataset)
    )


def resolve_batch_size(config: ExperimentConfig, n_train: int) -> tuple[ExperimentConfig, dict | None]:
    """Replace ``data.batch_size: auto`` by the measured choice (saved in the run's config, so a resume keeps it);
    the measurement goes to run.json."""
    if config.data.batch_size != "auto":
        return config, None
    trainer = config.trainer
    accelerator = trainer.accelerator
    device = "cuda" if gpu_requested(accelerator) else "cpu"
    several = trainer.devices not in (1, "1") and not (
        trainer.devices == "auto" and (device == "cpu" or torch.cuda.device_count() == 1)
    )
    if trainer.num_nodes > 1 or several or trainer.strategy.startswith("ddp"):
        raise ConfigError(
            "data.batch_size auto is for single-device runs; give a number (`medclass memory` prints the largest "
            "that fits)"
        )
    precision = resolve_precision(trainer.precision, accelerator, config.data.input_size)
    size, estimate = auto_batch_size(
        config.model.name, config.data.input_size, precision, device, config.model.in_chans, n_train
    )
    log.info(
        "data.batch_size auto: %d (a %s step at %d px needs %.2f GiB + %.1f MiB per image; %d would fit in 80%% "
        "of %.1f GiB)", size, device, config.data.input_size, estimate.fixed_bytes / 2**30,
        estimate.bytes_per_image / 2**20, estimate.max_batch_size, estimate.budget_bytes / 0.8 / 2**30,
    )  # fmt: skip
    data = config.data.model_copy(update={"batch_size": size})
    info = {
        "chosen": size, "device": device, "precision": precision, "max_fitting": estimate.max_batch_size,
        "fixed_bytes": round(estimate.fixed_bytes), "bytes_per_image": round(estimate.bytes_per_image),
        "measured": {str(b): m for b, m in estimate.measured.items()},
    }  # fmt: skip
    return config.model_copy(update={"data": data}), info


def train(
    config: ExperimentConfig, progress: bool | None = None, callbacks: list[L.Callback] | None = None
) -> TrainResult | None:
    """Train the model the config describes and keep the best validation epoch (checkpoints/best.ckpt).
    ``callbacks`` join the Trainer's own (e.g. a tuning study's pruning). Returns None in the extra processes of a
    distributed run (only rank 0 owns the run directory)."""
    started = time.perf_counter()
    check_model_name(config.model.name)  # fail before loading data when the model name is wrong
    L.seed_everything(config.seed, workers=True, verbose=False)
    dataset = load_dataset(config.data)
    flips = flip_policy(config.data, dataset.classes)  # a flip that would swap sides is refused before anything
    config, auto_batch = resolve_batch_size(config, len(dataset.splits["train"]))
    module = build_module(config, dataset)

    if os.environ.get(RUN_DIR_ENV):
        run = RunDir(os.environ[RUN_DIR_ENV])
        run.path.mkdir(parents=True, exist_ok=True)
    else:
        run = RunDir.create(config.output_dir, config.experiment)
    if is_rank_zero():
        os.environ[RUN_DIR_ENV] = str(run.path)  # inherited by the processes Lightning launches for DDP
        log.info("run directory: %s", run.path)
        # Record where the data was found, so evaluating the run later does not depend on MEDCLASS_DATA.
        config = config.model_copy(update={"data": config.data.with_found_data(dataset.source)})
        _write_run_files(run, config, dataset, module)
        run.update_status(augmentation=flips.as_dict())
        log.info("%s", flips.sentence())
        if auto_batch:
            run.update_status(batch_size_auto=auto_batch)
    try:
        return _fit(run, config, dataset, module, progress, started, checkpoint=None, callbacks=callbacks)
    finally:
        if is_rank_zero():
            os.environ.pop(RUN_DIR_ENV, None)


def resume(run_dir: str | Path, progress: bool | None = None) -> TrainResult | None:
    """Continue a run from its last checkpoint: same config, data split, stage, schedule and epoch count."""
    run = RunDir.open(run_dir)
    status = run.read_status()
    if status.get("status") == "finished":
        raise UserError(f"{run.path} finished already; there is nothing to resume")
    after_training = status.get("status") == "interrupted" and status.get("interrupted_in") not in (None, "training")
    if status.get("status") == "trained" or after_training:  # stopped after training: nothing to train
        log.info("resuming %s: its training had finished; the gate and the test evaluation remain", run.path)
        config = run.load_config()
        dataset = load_dataset(config.data)
        loggers = build_loggers(config, run) if is_rank_zero() else []
        monitor = str(status.get("monitor", f"val/{config.checkpoint.monitor}"))
        return TrainResult(run.path, status.get("best_epoch"), status.get("best_score"), monitor, 0.0, dataset, loggers)
    # last.ckpt, or best.ckpt when a stop came before the first last.ckpt was complete (epochs after it are
    # trained again). Both are read before anything is written, so a refused resume changes nothing on disk.
    checkpoint = run.checkpoint_path("last")
    if not checkpoint.is_file() and run.checkpoint_path("best").is_file():
        checkpoint = run.checkpoint_path("best")
    checkpoint = run.existing_checkpoint(checkpoint.stem)
    epochs_done = _checkpoint_epoch(checkpoint)
    config = run.load_config()
    started = time.perf_counter()
    L.seed_everything(config.seed, workers=True, verbose=False)
    dataset = load_dataset(config.data)
    module = build_module(config, dataset)
    if is_rank_zero():
        os.environ[RUN_DIR_ENV] = str(run.path)
        run.update_status(status="running", resumed=[*status.get("resumed", []), _now()])
        _drop_epochs_after(run, epochs_done)
        for leftover in run.checkpoint_dir.glob(".*.tmp"):  # a write cut short by SIGKILL; its process is gone
            leftover.unlink(missing_ok=True)
        log.info("resuming %s from %s", run.path, checkpoint.name)
    try:
        return _fit(run, config, dataset, module, progress, started, checkpoint=checkpoint)
    finally:
        if is_rank_zero():
            os.environ.pop(RUN_DIR_ENV, None)


def _write_run_files(
    run: RunDir, config: ExperimentConfig, dataset: LabelledImages, module: ClassificationModule
) -> None:
    n_params = sum(p.numel() for p in module.parameters())
    weights = getattr(module.net, "weights_source", "")
    run.update_status(status="running", started=_now(), experiment=config.experiment, parameters=n_params,
                      weights=weights)  # fmt: skip
    run.write_config(config)
    run.write_data_summary(dataset.summary())
    run.write_splits(_split_rows(dataset))
    run.write_skipped((entry["file"], entry["reason"]) for entry in dataset.skipped)
    run.write_preprocessing({k: module.metadata[k] for k in ("in_chans", "input_size", "mean", "std")})
    run.write_environment(collect_environment(config.seed))
    for warning in dataset.warnings:
        log.warning(warning)
    stages = config.resolved_stages()
    log.info(
        "%s: %s task, %d classes, %s images | model %s, %.2fM parameters | %s",
        dataset.name, dataset.task, len(dataset.classes),
        " / ".join(f"{len(s)} {n}" for n, s in dataset.splits.items()), config.model.name, n_params / 1e6,
        ", ".join(_stage_words(s.name, s.epochs, s.train, config.trainer.limit_train_batches) for s in stages),
    )  # fmt: skip
    if weights:
        log.info("pretrained weights: %s", weights)


def _stage_words(name: str, epochs: int, train: str, limit: int | float | None) -> str:
    """``finetune: 5 epochs of at most 3 batches, every layer trains``: what a stage does, in words."""
    layers = "every layer trains" if train == "all" else "backbone frozen"
    return f"{name}: {plural(epochs, 'epoch')}{limited_epochs(limit)}, {layers}"


def _split_rows(dataset: LabelledImages) -> list[tuple[str, ...]]:
    """(file, split, label[, group hash]) for every image of a dataset made of files (splits.csv); multi-label labels
    joined by |."""
    rows: list[tuple[str, ...]] = []
    for split_name, split in dataset.splits.items():
        if split.files is None:
            continue
        groups = dataset.split_group_keys(split_name)
        for i, (file, label) in enumerate(zip(split.files, split.labels, strict=True)):
            if is_single_label(dataset.task):
                label_text = dataset.classes[int(label)]
            else:
                label_text = "|".join(c for c, on in zip(dataset.classes, label, strict=True) if on)
            rows.append((file, split_name, label_text) if groups is None else (file, split_name, label_text, groups[i]))
    return rows


def _fit(
    run: RunDir,
    config: ExperimentConfig,
    dataset: LabelledImages,
    module: ClassificationModule,
    progress: bool | None,
    started: float,
    checkpoint: Path | None,
    callbacks: list[L.Callback] | None = None,
) -> TrainResult | None:
    loggers = build_loggers(config, run) if is_rank_zero() else []
    stop: GracefulStop | None = None
    try:
        trainer = build_trainer(config, run, progress, loggers, callbacks)
        stop = next((cb for cb in trainer.callbacks if isinstance(cb, GracefulStop)), None)
        with warnings.catch_warnings():
            if not third_party_wanted():  # --verbose shows them
                # In-memory arrays need no loader workers; Lightning's advice to add some does not apply here.
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                # epochs.csv and the trackers get one row per epoch; Lightning's per-step logging interval is moot.
                warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
                # A resumed run's checkpoint folder holds its own last.ckpt and best.ckpt, as it should.
                warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
            trainer.fit(
                module, datamodule=ClassificationDataModule(dataset, config.data, config.seed), ckpt_path=checkpoint
            )
    except UserError as exc:
        if is_rank_zero():
            run.update_status(status="failed", error=str(exc), finished=_now())
        raise
    except OSError as exc:
        last = run.checkpoint_path("last")
        kept = (
            f"{last} from the last finished epoch is intact: resume with `medclass train --resume {run.path}`"
            if last.is_file()
            else "No epoch had finished, so there is no checkpoint to resume from"
        )
        error = storage_error(exc, kept)
        if error is None:
            raise
        if is_rank_zero():
            with contextlib.suppress(OSError):  # the disk may still be full
                run.update_status(status="failed", error=str(error), finished=_now())
        raise error from None
    except (SystemExit, KeyboardInterrupt) as exc:  # Lightning turns a stop request into SystemExit
        signum = stop.signum if stop is not None and stop.signum is not None else signal.SIGINT
        if isinstance(exc, SystemExit) and stop is not None and stop.signum is None and exc.code not in (None, 1):
            raise
        raise _interrupted(run, config, signal.Signals(signum)) from None
    except Exception as exc:
        if is_rank_zero():
            with contextlib.suppress(OSError):
                run.update_status(status="failed", error=f"{type(exc).__name__}: {exc}"[:500], finished=_now())
        raise
    if not trainer.is_global_zero:
        return None

    checkpoint_cb = trainer.checkpoint_callback
    score = checkpoint_cb.best_model_score if checkpoint_cb is not None else None
    best_score = float(score) if score is not None else None
    best_epoch = _best_epoch(run)
    monitor = f"val/{config.checkpoint.monitor}"
    stopped_early = trainer.current_epoch < config.total_epochs
    duration = time.perf_counter() - started
    run.update_status(
        status="trained", trained=_now(), epochs=trainer.current_epoch, stopped_early=stopped_early,
        monitor=monitor, best_epoch=best_epoch, best_score=best_score, train_s=round(duration, 1),
    )  # fmt: skip
    return TrainResult(run.path, best_epoch, best_score, monitor, duration, dataset, loggers, trainer.global_step)


def _interrupted(run: RunDir, config: ExperimentConfig, signum: signal.Signals) -> RunInterrupted:
    """Record the stop in run.json and say how to go on."""
    last = next((run.checkpoint_path(w) for w in ("last", "best") if run.checkpoint_path(w).is_file()), None)
    done = _checkpoint_epoch(last) if last is not None else 0
    kept = (
        f"{last.name} holds {done} finished epoch(s) of {config.total_epochs}; resume with "
        f"`medclass train --resume {run.path}`"
        if last is not None
        else "no epoch had finished, so there is nothing to resume: train again"
    )
    if is_rank_zero():
        with contextlib.suppress(OSError):
            run.update_status(status="interrupted", signal=signum.name, epochs_done=done, interrupted=_now(),
                              interrupted_in="training")  # fmt: skip
    return RunInterrupted(f"stopped by {signum.name}: {kept}", exit_code=128 + int(signum))


def _checkpoint_epoch(path: Path) -> int:
    """Epochs completed when ``path`` was saved."""
    return int(read_checkpoint(path).get("epoch", -1)) + 1


def _drop_epochs_after(run: RunDir, epochs_done: int) -> None:
    """Forget epoch-log rows the checkpoint does not contain (they are trained again)."""
    if not run.epochs_csv.is_file():
        return
    lines = run.epochs_csv.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= epochs_done]
    atomic_write_text(run.epochs_csv, "".join(kept))


def _best_epoch(run: RunDir) -> int | None:
    path = run.checkpoint_path("best")
    if not path.is_file():
        return None
    epoch = read_checkpoint(path).get("epoch")
    return int(epoch) + 1 if epoch is not None else None
