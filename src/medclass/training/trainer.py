"""Build the Lightning Trainer for a run: checkpoints, epoch log and seeding, early stopping, EMA, precision,
experiment trackers and the distribution strategy (Lightning's DDP for several devices or nodes)."""

from __future__ import annotations

import logging

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import DDPStrategy
from rich.console import Console

from medclass.config.schema import ExperimentConfig
from medclass.errors import ConfigError
from medclass.run_dir import RunDir
from medclass.training.callbacks import (
    DivergenceStop,
    EpochBar,
    EpochCSVLogger,
    EpochLines,
    EpochSeed,
    GracefulStop,
    StageEarlyStopping,
)
from medclass.training.checkpoint_io import AtomicCheckpointIO
from medclass.training.hardware import emulated_bf16, gpu_requested, resolve_channels_last, resolve_precision

log = logging.getLogger("medclass")


def _strategy(config: ExperimentConfig):
    """Freezing a backbone in one stage leaves parameters without gradients, which DDP must be told about."""
    freezes = any(stage.train == "head" for stage in config.resolved_stages())
    if config.trainer.strategy == "ddp" and freezes:
        return DDPStrategy(find_unused_parameters=True)
    return config.trainer.strategy


def _divergence_hint(config: ExperimentConfig) -> str:
    lrs = sorted({stage.lr for stage in config.resolved_stages()})
    hints = [f"lower optimizer.lr (now {', '.join(f'{lr:g}' for lr in lrs)})"]
    if config.trainer.gradient_clip_val is None:
        hints.append("set trainer.gradient_clip_val=1.0")
    if config.data.std is not None:
        hints.append(f"check data.mean/std (now {list(config.data.mean or [])}/{list(config.data.std)})")
    if config.trainer.precision == "16-mixed":
        hints.append("use trainer.precision=bf16-mixed or 32-true")
    return "Try: " + ", ".join(hints) + "."


def build_trainer(
    config: ExperimentConfig, run: RunDir, progress: bool | None = None, loggers: list[Logger] | None = None,
    extra_callbacks: list[L.Callback] | None = None,
) -> L.Trainer:  # fmt: skip
    trainer_config = config.trainer
    show_progress = trainer_config.progress_bar if progress is None else progress
    monitor, mode = f"val/{config.checkpoint.monitor}", config.checkpoint.resolved_mode
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run.checkpoint_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
            auto_insert_metric_name=False, enable_version_counter=False,
        ),
        # A second checkpoint callback for last.ckpt: Lightning's save_last only writes when the best one changes.
        ModelCheckpoint(
            dirpath=run.checkpoint_dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
            auto_insert_metric_name=False, enable_version_counter=False,
        ),
        EpochCSVLogger(run),
        EpochSeed(config.seed),
        DivergenceStop(run.checkpoint_path("last"), _divergence_hint(config)),
        GracefulStop(),
    ]  # fmt: skip
    last_stage = config.resolved_stages()[-1]
    if last_stage.early_stopping_patience is not None:
        callbacks.append(
            StageEarlyStopping(
                first_epoch=last_stage.first_epoch,
                monitor=monitor,
                mode=mode,
                patience=last_stage.early_stopping_patience,
                min_delta=config.early_stopping.min_delta,
            )  # fmt: skip
        )
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if trainer_config.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=trainer_config.ema_decay))
    # A live bar in a terminal; otherwise (a log file, a pipe, or progress_bar: false) one plain line per epoch.
    bar = show_progress and Console().is_terminal
    callbacks.append(EpochBar(leave=True) if bar else EpochLines(monitor, mode))
    callbacks += extra_callbacks or []
    precision = resolve_precision(trainer_config.precision, trainer_config.accelerator, config.data.input_size)
    if emulated_bf16(precision, trainer_config.accelerator):
        log.warning(
            "trainer.precision=bf16-mixed on a CPU without bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated "
            "here, many times slower than 32-bit (40x measured for ResNet-18); use trainer.precision=auto or 32-true"
        )
    device_type = "cuda" if gpu_requested(trainer_config.accelerator) else "cpu"
    channels_last = resolve_channels_last(trainer_config.channels_last, device_type, config.data.input_size)
    run.update_status(precision=precision, channels_last=channels_last)  # what auto became on this machine
    try:
        return L.Trainer(
            default_root_dir=run.path,
            max_epochs=config.total_epochs,
            accelerator=trainer_config.accelerator,
            devices=trainer_config.devices,
            num_nodes=trainer_config.num_nodes,
            strategy=_strategy(config),
            precision=precision,
            gradient_clip_val=trainer_config.gradient_clip_val,
            deterministic=trainer_config.deterministic,
            limit_train_batches=trainer_config.limit_train_batches,
            log_every_n_steps=trainer_config.log_every_n_steps,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            logger=loggers or False,
            enable_progress_bar=bar,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError) as exc:
        # e.g. accelerator=gpu without a GPU, an unknown strategy, or a precision the device cannot run
        raise ConfigError(f"trainer: {exc}") from None
