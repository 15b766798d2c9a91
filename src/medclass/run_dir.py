"""The run directory: the contract between training and everything after it (evaluate, predict, export, ...).

Layout (format version 1)::

    runs/<experiment>/<YYYYmmdd-HHMMSS>/
        run.json            format version, status, start/end time, best epoch and its validation score
        config.yaml         the resolved experiment config (load it with medclass.config.load_config)
        data.json           dataset summary: task, class names, counts per split and class, source file, split
        preprocessing.json  what the model expects: channels, input size, normalisation mean/std
        environment.json    python, platform, package versions, device, seed, git commit, command line
        epochs.csv          one row per epoch: losses, validation metrics, learning rate (wall times: run.json)
        checkpoints/best.ckpt, checkpoints/last.ckpt   Lightning checkpoints (weights-only loadable)
        metrics.json        test metrics of the best checkpoint: all metrics, 95% intervals, per-class table,
                            calibration, binary operating point (other split/checkpoint: metrics_<split>_<ckpt>.json)
        calibration.json    temperature and decision thresholds fitted on validation (applied by prediction on request)
        predictions_test.csv  per test image: true label, predicted label, score per class
        report/             report.html (self-contained), summary.md and the plots (PNG)
        tensorboard/, wandb/  tracker files when tracking is switched on
        splits.csv          file sources: every image file with its split and label (the split is part of the result)
        skipped.csv         files left out (unreadable, not an image, missing), with the reason

Every file is written atomically.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medclass.config import ExperimentConfig, dump_config, load_config
from medclass.errors import ConfigError, RunDirError
from medclass.io import atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from medclass.data.dataset import LabelledImages

RUN_FORMAT_VERSION = 1
CHECKPOINTS = ("best", "last")


class RunDir:
    """Paths and readers/writers for one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # Paths -------------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def epochs_csv(self) -> Path:
        return self.path / "epochs.csv"

    def checkpoint_path(self, which: str = "best") -> Path:
        return self.checkpoint_dir / f"{which}.ckpt"

    def predictions_path(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"

    def file(self, name: str) -> Path:
        return self.path / name

    # Creating and opening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, output_dir: Path, experiment: str) -> RunDir:
        """A new, empty run directory ``output_dir/experiment/<timestamp>`` (suffixed if that name is taken)."""
        parent = Path(output_dir) / experiment
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create {parent} ({exc.strerror}): choose a writable output_dir") from None
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for attempt in range(1000):
            path = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise RunDirError(f"could not find a free run folder name under {parent}")

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory; raises :class:`RunDirError` when it is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{run.path} is not a folder: give the run directory that `medclass train` printed")
        if not run.config_path.is_file():
            raise RunDirError(f"{run.path} has no config.yaml, so it is not a medclass run directory")
        return run

    # Reading and writing -----------------------------------------------------------------------------------
    def write_config(self, config: ExperimentConfig) -> None:
        atomic_write_text(self.config_path, dump_config(config))

    def load_config(self) -> ExperimentConfig:
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            raise RunDirError(
                f"{exc} -- the run's config.yaml does not fit this medclass version's schema; it was written by "
                "another version or edited by hand"
            ) from None

    def check_format(self) -> None:
        """Refuse run directories written in another format version (they may lack or misname files)."""
        path = self.file("run.json")
        if not path.is_file():
            raise RunDirError(f"{self.path} has no run.json; it is not a complete medclass run directory")
        version = read_json(path).get("format_version")
        if version != RUN_FORMAT_VERSION:
            raise RunDirError(
                f"{path} says run format version {version!r}; this medclass reads version {RUN_FORMAT_VERSION}: "
                "evaluate it with the medclass version that wrote it"
            )

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.file(name), obj)

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        if not path.is_file():
            raise RunDirError(f"{self.path} has no {name}; was the run finished?")
        return read_json(path)

    def read_status(self) -> dict[str, Any]:
        """run.json, or {} before it exists."""
        path = self.file("run.json")
        return read_json(path) if path.is_file() else {}

    def update_status(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json."""
        path = self.file("run.json")
        status = read_json(path) if path.is_file() else {"format_version": RUN_FORMAT_VERSION}
        status.update(fields)
        atomic_write_json(path, status)

    def existing_checkpoint(self, which: str = "best") -> Path:
        """The checkpoint file, or a :class:`RunDirError` saying which are there."""
        if which not in CHECKPOINTS:
            raise RunDirError(f"checkpoint {which!r} is not one of {', '.join(CHECKPOINTS)}")
        path = self.checkpoint_path(which)
        if not path.is_file():
            present = sorted(p.stem for p in self.checkpoint_dir.glob("*.ckpt")) if self.checkpoint_dir.is_dir() else []
            found = (
                f"it has {', '.join(present)}" if present else "it has no checkpoints (did training finish an epoch?)"
            )
            raise RunDirError(f"{self.path} has no {which} checkpoint ({path.name}); {found}")
        return path

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def write_split_files(run: RunDir, dataset: LabelledImages) -> None:
    """splits.csv (file, split, label) for datasets made of files, and skipped.csv when files were left out."""
    from medclass.tasks import is_single_label

    rows = []
    for split_name, split in dataset.splits.items():
        if split.files is None:
            continue
        for file, label in zip(split.files, split.labels, strict=True):
            if is_single_label(dataset.task):
                label_text = dataset.classes[int(label)]
            else:
                label_text = "|".join(c for c, on in zip(dataset.classes, label, strict=True) if on)
            rows.append([file, split_name, label_text])
    if rows:
        atomic_write_text(run.file("splits.csv"), _csv([["file", "split", "label"], *rows]))
    if dataset.skipped:
        skipped = [[entry["file"], entry["reason"]] for entry in dataset.skipped]
        atomic_write_text(run.file("skipped.csv"), _csv([["file", "reason"], *skipped]))


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()
