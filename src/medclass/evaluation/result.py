"""What an evaluation gives: the metrics of one checkpoint on one split, with their intervals, the per-class table,
calibration, the binary operating point and the files written; ``as_dict`` is metrics.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medclass.metrics import metric_definitions, metric_label
from medclass.wording import class_name

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
    undefined_intervals: dict[str, str] = field(default_factory=dict)  # metric -> why it has no interval
    interval_methods: dict[str, str] = field(default_factory=dict)  # metric -> wilson | percentile bootstrap
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
            # every metric that has an interval method: [low, high], or None where it is undefined (see why)
            "intervals": {
                name: (list(self.intervals[name]) if name in self.intervals else None)
                for name in (self.interval_methods or self.intervals)
            },
            **({"intervals_undefined": self.undefined_intervals} if self.undefined_intervals else {}),
            **({"interval_methods": self.interval_methods} if self.interval_methods else {}),
            "per_class": self.per_class,
            "calibration": self.calibration,
            "operating_point": self.operating_point,
            "definitions": metric_definitions(list(self.metrics)),
            # Speed is a fact of the machine, not of the model: it goes to run.json, so that metrics.json is the
            # same file for the same config and seed.
            **{k: v for k, v in self.extra.items() if k not in UNREPRODUCIBLE},
        }

    def undefined_notes(self) -> list[str]:
        """One line per value whose interval is undefined, with the reason (headline, positive class, per class)."""

        def line(name: str, row: dict[str, Any], reason: str) -> str:
            return f"{name.upper() if len(name) <= 3 else name} of {class_name(row['class'])}: {reason}"

        notes = [f"{metric_label(name)}: {reason}" for name, reason in self.undefined_intervals.items()]
        positive = self.extra.get("positive_class") or {}
        said = set()
        for name, reason in ((positive.get("ci") or {}).get("undefined") or {}).items():
            notes.append(line(name, positive, reason))
            said.add((positive["class"], name))
        for row in self.per_class:
            for name, reason in ((row.get("ci") or {}).get("undefined") or {}).items():
                if (row["class"], name) not in said:
                    notes.append(line(name, row, reason))
        return notes
