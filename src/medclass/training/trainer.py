"""Build the Lightning Trainer for a run: checkpoints, the epoch log, the progress bar."""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from medclass.config.schema import ExperimentConfig
from medclass.errors import ConfigError
from medclass.run_dir import RunDir
from medclass.training.callbacks import EpochCSVLogger


def build_trainer(config: ExperimentConfig, run: RunDir, progress: bool | None = None) -> L.Trainer:
    trainer_config = config.trainer
    show_progress = trainer_config.progress_bar if progress is None else progress
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run.checkpoint_dir,
            filename="best",
            monitor=f"val/{config.checkpoint.monitor}",
            mode=config.checkpoint.resolved_mode,
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        EpochCSVLogger(run.epochs_csv),
    ]
    if show_progress:
        callbacks.append(RichProgressBar(leave=True))
    try:
        return _trainer(config, run, callbacks, show_progress)
    except MisconfigurationException as exc:
        # e.g. accelerator=gpu without a GPU, or a precision the device cannot run
        raise ConfigError(f"trainer: {exc}") from None


def _trainer(config: ExperimentConfig, run: RunDir, callbacks: list[L.Callback], show_progress: bool) -> L.Trainer:
    trainer_config = config.trainer
    return L.Trainer(
        default_root_dir=run.path,
        max_epochs=trainer_config.max_epochs,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        precision=trainer_config.precision,
        gradient_clip_val=trainer_config.gradient_clip_val,
        deterministic=trainer_config.deterministic,
        limit_train_batches=trainer_config.limit_train_batches,
        log_every_n_steps=trainer_config.log_every_n_steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=show_progress,
        enable_model_summary=False,
    )
