"""Callbacks: the run directory's per-epoch record, per-epoch seeding, stage-aware early stopping and the stop on a
diverged loss."""

from __future__ import annotations

import csv
import functools
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, RichProgressBar

from medclass.errors import TrainingDiverged
from medclass.metrics import METRICS, metric_label
from medclass.run_dir import RunDir

progress_log = logging.getLogger("medclass.progress")


def epoch_columns() -> tuple[str, ...]:
    """epochs.csv's columns: the validation columns are the registry's headline metrics (computed every epoch)."""
    return ("epoch", "stage", "train_loss", "val_loss", *(f"val_{name}" for name in METRICS.names("headline")),
            "lr_head", "lr_backbone")  # fmt: skip


class EpochCSVLogger(L.Callback):
    """One row per finished epoch in ``epochs.csv``, written after validation; the epoch's wall time goes to
    run.json (``epoch_seconds``), so epochs.csv holds only what the seed determines and two runs of one config
    give byte-identical files.

    Lightning's CSVLogger mixes step and epoch rows with gaps; a training log a person reads wants exactly one
    complete row per epoch, which this small callback writes.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.path = run.epochs_csv
        self.columns = epoch_columns()
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._rates: dict[str, float] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Remember the learning rates this batch trains with (the schedule moves on after the epoch's last one)."""
        self._rates = {}
        for group in trainer.optimizers[0].param_groups if trainer.optimizers else []:
            self._rates.setdefault(group.get("part", "head"), group["lr"] / group.get("lr_scale", 1.0))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        stage_for_epoch = getattr(pl_module, "stage_for_epoch", None)
        stage = stage_for_epoch(trainer.current_epoch) if stage_for_epoch else None
        row["stage"] = stage.name if stage is not None else ""
        for column in self.columns[2:-2]:  # the logged values, between (epoch, stage) and the learning rates
            value = metrics.get(column.replace("_", "/", 1))  # train_loss -> train/loss, val_f1_macro -> val/f1_macro
            row[column] = f"{float(value):.6g}" if value is not None else ""
        rates = getattr(self, "_rates", {})
        row["lr_head"] = f"{rates['head']:.6g}" if "head" in rates else ""
        row["lr_backbone"] = f"{rates['backbone']:.6g}" if "backbone" in rates else ""
        if stage is not None and stage.train != "all" and "backbone" in rates:
            row["lr_backbone"] = "0"  # frozen: the optimizer's group keeps a rate, but nothing of it is trained
        seconds = self.run.read_status().get("epoch_seconds", {})
        seconds[str(row["epoch"])] = round(time.perf_counter() - self._epoch_start, 2)
        self.run.update_status(epoch_seconds=seconds)
        new_file = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow(row)


class EpochSeed(L.Callback):
    """Seed everything from (seed, epoch) before an epoch's first batch, so dropout and mixup draw the same numbers
    whether the run went straight through or was resumed (Lightning skips epoch-start hooks on a resume; the data
    order and augmentation are seeded by the sampler)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            L.seed_everything(self.seed * 1000 + trainer.current_epoch, workers=True, verbose=False)


class GracefulStop(L.Callback):
    """SIGINT (Ctrl-C) and SIGTERM (schedulers) ask the run to stop: the batch in progress finishes, and Lightning
    stops before the next one (its SIGTERM path), so no checkpoint is ever cut in the middle of its write. A
    second Ctrl-C interrupts at once. ``signum`` says which signal came (None: none)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, functools.partial(self._handle, trainer))

    def _handle(self, trainer: L.Trainer, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and hasattr(connector, "received_sigterm"):
            connector.received_sigterm = True  # Lightning stops at the next batch boundary
        else:
            trainer.should_stop = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class StageEarlyStopping(EarlyStopping):
    """Early stopping that only counts epochs of the stage that asks for it (the last one), starting afresh there."""

    def __init__(self, first_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_epoch = first_epoch

    # Lightning checks at one of these two hooks (check_on_train_epoch_end); before the callback's stage neither
    # runs, so the counter and best score stay untouched.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.first_epoch:
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.first_epoch:
            super().on_train_epoch_end(trainer, pl_module)


class DivergenceStop(L.Callback):
    """Stop with a clear message when the training loss is NaN or infinite, before an epoch-end checkpoint could
    save the broken weights: last.ckpt stays the last good epoch. Checked every step on a CPU; on a GPU every
    ``every_n`` steps and at each epoch's last step (each check waits for the GPU)."""

    def __init__(self, last_checkpoint: Path, hint: str, every_n: int = 10) -> None:
        self.last_checkpoint = Path(last_checkpoint)
        self.hint = hint
        self.every_n = every_n

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if loss.device.type != "cpu" and not last_of_epoch and trainer.global_step % self.every_n:
            return
        if bool(torch.isfinite(loss.detach()).all()):
            return
        kept = (
            f"the last good checkpoint is {self.last_checkpoint} (resume with `medclass train --resume "
            f"{self.last_checkpoint.parent.parent}`)"
            if self.last_checkpoint.is_file()
            else "no epoch finished before it, so there is no checkpoint"
        )
        value = float(loss.detach().float().mean())
        raise TrainingDiverged(
            f"training diverged: the loss is {value} at epoch {trainer.current_epoch + 1}, step "
            f"{trainer.global_step}; {kept}. {self.hint}"
        )


class EpochBar(RichProgressBar):
    """Lightning's rich progress bar, with epochs numbered from 1 as in epochs.csv, the report and the plain
    lines ("Epoch 1/30", not "Epoch 0/29"). Lightning builds the text in this one method and has no option for it."""

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        return f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")


class EpochLines(L.Callback):
    """Progress for output that is not a terminal (nohup, CI, a cluster job's log): one plain line per epoch
    (epoch k/N, stage, training and validation loss, the monitored metric and the best so far, seconds), and
    within a long epoch a line every ``every_s`` seconds, so a log file never sits silent for minutes."""

    def __init__(self, monitor: str, mode: str, every_s: float = 30.0) -> None:
        self.monitor, self.mode, self.every_s = monitor, mode, every_s
        self.best: tuple[float, int] | None = None
        self._started = self._reported = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self._reported = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if now - self._reported < self.every_s or not trainer.is_global_zero:
            return
        self._reported = now
        total = trainer.num_training_batches
        done = batch_idx + 1
        left = (now - self._started) / done * (total - done) if isinstance(total, int) and total > done else 0.0
        of = f"/{total}" if isinstance(total, int) else ""
        progress_log.info(
            "%s: batch %d%s, %.0f s so far, about %.0f s left in this epoch",
            self._epoch(trainer), done, of, now - self._started, left,
        )  # fmt: skip

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = []
        for key, label in (("train/loss", "training loss"), ("val/loss", "validation loss")):
            if key in metrics:
                parts.append(f"{label} {float(metrics[key]):.4f}")
        epoch = trainer.current_epoch + 1
        if self.monitor in metrics:
            value = float(metrics[self.monitor])
            better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
            if better:
                self.best = (value, epoch)
            if self.monitor != "val/loss":
                parts.append(f"{metric_label(self.monitor)} {value:.4f}")
            parts[-1] += f" (best {self.best[0]:.4f} at epoch {self.best[1]})" if self.best else ""
        stages = getattr(pl_module, "stages", [])
        stage = f" ({pl_module.stage_for_epoch(trainer.current_epoch).name})" if len(stages) > 1 else ""
        progress_log.info(
            "%s%s: %s, %.1f s", self._epoch(trainer), stage, ", ".join(parts), time.perf_counter() - self._started
        )

    @staticmethod
    def _epoch(trainer: L.Trainer) -> str:
        total = trainer.max_epochs
        return f"epoch {trainer.current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")
