"""What an evaluation gives: the metrics of one checkpoint on one split, with their intervals, the per-class table,
calibration, the binary operating point and the files written; ``as_dict`` is metrics.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medclass.metrics import metric_definitions

UNREPRODUCIBLE = ("images_per_second",)


@dataclass
class EvaluationResult:
    run_dir: Path
    split: str
    checkpoint: str
    metrics: dict[str, float]
    n_samples: int
    epoch: int | None
    task: str
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    operating_point: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "checkpoint": self.checkpoint,
            "epoch": self.epoch,
            "n_samples": self.n_samples,
            "task": self.task,
            "metrics": self.metrics,
            "intervals": {name: list(bounds) for name, bounds in self.intervals.items()},
            "per_class": self.per_class,
            "calibration": self.calibration,
            "operating_point": self.operating_point,
            "definitions": metric_definitions(list(self.metrics)),
            # Speed is a fact of the machine, not of the model: it goes to run.json, so that metrics.json is the
            # same file for the same config and seed.
            **{k: v for k, v in self.extra.items() if k not in UNREPRODUCIBLE},
        }
