"""Callbacks that write the run directory's per-epoch record."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L

EPOCH_COLUMNS = (
    "epoch", "train_loss", "val_loss", "val_acc", "val_auc", "val_f1_macro", "val_balanced_acc", "lr", "seconds",
)  # fmt: skip


class EpochCSVLogger(L.Callback):
    """One row per finished epoch in ``epochs.csv``, written after validation.

    Lightning's CSVLogger mixes step and epoch rows with gaps; a training log a person reads wants exactly one
    complete row per epoch, which this small callback writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        for column in EPOCH_COLUMNS[1:-2]:
            value = metrics.get(column.replace("_", "/", 1))  # train_loss -> train/loss, val_f1_macro -> val/f1_macro
            row[column] = f"{float(value):.6g}" if value is not None else ""
        row["lr"] = f"{trainer.optimizers[0].param_groups[0]['lr']:.6g}" if trainer.optimizers else ""
        row["seconds"] = f"{time.perf_counter() - self._epoch_start:.2f}"
        new_file = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=EPOCH_COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)
