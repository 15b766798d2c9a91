"""The run directory: the contract between training and everything after it (evaluate, predict, export, compare).

:class:`RunDir` owns it: every file name is spelled here and nowhere else, with typed readers and writers, the
one answer to "is this a run directory?", and the format version (checked on read). The layout, as the README
shows it (the README's table is :func:`layout_markdown`, checked by a test)::

    runs/<experiment>/<YYYYmmdd-HHMMSS>/   see LAYOUT below

Every file is written atomically.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medclass.config import ExperimentConfig, dump_config, load_config
from medclass.errors import ConfigError, RunDirError
from medclass.io import atomic_write_json, atomic_write_text, read_json

RUN_FORMAT_VERSION = 1
CHECKPOINTS = ("best", "last")
CANONICAL = ("test", "best")  # the result: the best checkpoint on the test split

# What a run directory holds, in the README's words (the README's table is made from this).
LAYOUT: tuple[tuple[str, str], ...] = (
    ("`run.json`", "format version, status, start/end times, best epoch and its validation score, parameters, where "
     "the pretrained weights came from (`weights`)"),
    ("`config.yaml`", "the resolved config (all defaults filled in, paths absolute)"),
    ("`data.json`", "task, class names, counts per split and class, source, how the split was made, skipped files, "
     "leakage and label-conflict checks"),
    ("`splits.csv`, `skipped.csv`", "file sources: every image with its split, label and (when the data names "
     "groups) a keyed hash of its group; files left out and why"),
    ("`preprocessing.json`", "input channels, input size, normalisation mean/std"),
    ("`environment.json`", "Python, platform, package versions, device, seed, git commit, command line"),
    ("`epochs.csv`", "one row per epoch: train/val loss, the validation headline metrics (ACC, AUC, F1, balanced "
     "ACC: the metric registry's), head and backbone learning rates (0 for a frozen backbone; wall times per epoch "
     "and evaluation speed are in `run.json`)"),
    ("`checkpoints/best.ckpt`, `checkpoints/last.ckpt`", "Lightning checkpoints with medclass metadata (class names, "
     "task, normalisation, format version), loadable with `torch.load(weights_only=True)`"),
    ("`metrics.json`", "test metrics of the best checkpoint with definitions, 95% intervals, per-class table, "
     "calibration, operating point, warnings and `weak` (a model no better than the commonest class or chance) "
     "(other split/checkpoint: `metrics_<split>_<checkpoint>.json`)"),
    ("`calibration.json`", "temperature (1.0 when it did not help on validation) and decision thresholds fitted on "
     "validation, the positive class (other checkpoint: `calibration_<checkpoint>.json`)"),
    ("`predictions_test.csv`", "per test image: its source (file path or npz index), true label, predicted label, "
     "probability of every class"),
    ("`report/`", "`report.html`, `summary.md` and the plots (other split/checkpoint: `report_<split>_<checkpoint>/`)"),
    ("`gate/`", "the gate in front of the model, fitted on the training split after training (or by `medclass gate "
     "fit RUN`): `gate.safetensors` (class means and precision of the out-of-distribution score), `gate.json` (its "
     "threshold chosen on validation, image-quality limits from the training images, pass rates on validation)"),
    ("`robustness/`", "`medclass evaluate RUN --corruptions ...`: `robustness.csv`, `.md` and `.png`"),
    ("`ood/`", "`medclass evaluate RUN --ood FOLDER`: how well the gate tells foreign and degraded images from the "
     "test split (`ood.md`, `ood.json`, `ood.png`)"),
    ("`tensorboard/`, `wandb/`", "tracker files, when switched on"),
    ("`external/NAME/`", "`medclass evaluate RUN --external NAME=PATH`: the best checkpoint on an external set: "
     "`metrics.json` (its metrics with intervals, the internal test split side by side with the differences, "
     "calibration, the validation threshold applied, the gate's pass rate, the copies of training images left out), "
     "`predictions.csv` (every image, its source, whether it was left out), `report.html`; also in the report"),
    ("`model/`", "the model package (`medclass export`, or made on first `predict`/`serve` of the run; "
     "`model_last/` for the last checkpoint)"),
)  # fmt: skip


def layout_markdown(layout: tuple[tuple[str, str], ...] | None = None) -> str:
    """The README's table of the run directory (or of another layout, e.g. SERIES_LAYOUT)."""
    layout = LAYOUT if layout is None else layout
    rows = ["| file | content |", "|---|---|", *(f"| {entry} | {content} |" for entry, content in layout)]
    return "\n".join(rows)


def _suffix(split: str, checkpoint: str) -> str:
    """'' for the canonical result (test split, best checkpoint), else ``_<split>_<checkpoint>``."""
    return "" if (split, checkpoint) == CANONICAL else f"_{split}_{checkpoint}"


def check_checkpoint(which: str) -> str:
    """``which`` when it names a checkpoint a run keeps (best or last)."""
    if which not in CHECKPOINTS:
        raise RunDirError(f"checkpoint {which!r} is not one of {', '.join(CHECKPOINTS)}")
    return which


class RunDir:
    """Paths, readers and writers for one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # Paths -------------------------------------------------------------------------------------------------
    @property
    def status_path(self) -> Path:
        return self.path / "run.json"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def data_path(self) -> Path:
        return self.path / "data.json"

    @property
    def preprocessing_path(self) -> Path:
        return self.path / "preprocessing.json"

    @property
    def environment_path(self) -> Path:
        return self.path / "environment.json"

    @property
    def splits_path(self) -> Path:
        return self.path / "splits.csv"

    @property
    def skipped_path(self) -> Path:
        return self.path / "skipped.csv"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def epochs_csv(self) -> Path:
        return self.path / "epochs.csv"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def wandb_dir(self) -> Path:
        return self.path / "wandb"

    def checkpoint_path(self, which: str = "best") -> Path:
        return self.checkpoint_dir / f"{which}.ckpt"

    def predictions_path(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"

    def metrics_path(self, split: str = "test", checkpoint: str = "best") -> Path:
        """metrics.json holds the canonical result (test split, best checkpoint); other pairs get their own file."""
        return self.path / f"metrics{_suffix(split, checkpoint)}.json"

    def calibration_path(self, checkpoint: str = "best") -> Path:
        """What prediction applies on request: temperature and thresholds, fitted on validation for one checkpoint."""
        return self.path / ("calibration.json" if checkpoint == "best" else f"calibration_{checkpoint}.json")

    def report_dir(self, split: str = "test", checkpoint: str = "best") -> Path:
        return self.path / f"report{_suffix(split, checkpoint)}"

    def robustness_dir(self, split: str = "test", checkpoint: str = "best") -> Path:
        return self.path / f"robustness{_suffix(split, checkpoint)}"

    def gate_dir(self, checkpoint: str = "best") -> Path:
        return self.path / ("gate" if checkpoint == "best" else f"gate_{checkpoint}")

    def ood_dir(self, split: str = "test", checkpoint: str = "best") -> Path:
        return self.path / f"ood{_suffix(split, checkpoint)}"

    def external_dir(self, name: str) -> ExternalDir:
        """``evaluate RUN --external NAME=PATH``: the best checkpoint's results on that external set."""
        return ExternalDir(self.path / "external" / name)

    def external_results(self) -> list[Path]:
        """metrics.json of every external set evaluated so far, by name."""
        return sorted(ExternalDir(p).metrics_path for p in (self.path / "external").glob("*") if p.is_dir()
                      and ExternalDir(p).metrics_path.is_file())  # fmt: skip

    def package_dir(self, checkpoint: str = "best") -> Path:
        return self.path / ("model" if checkpoint == "best" else f"model_{checkpoint}")

    def tracked_files(self) -> list[Path]:
        """The result files a tracker keeps with the run (MLflow artifacts), those that exist."""
        files = [self.config_path, self.metrics_path(), self.calibration_path(), self.epochs_csv, self.data_path,
                 self.environment_path]  # fmt: skip
        return [f for f in files if f.is_file()]

    # Creating, recognising and opening ---------------------------------------------------------------------
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

    @staticmethod
    def is_run_dir(path: str | Path) -> bool:
        """The one test of "is this a run directory?": a folder with the config.yaml medclass trained from (what
        :meth:`open` accepts; an incomplete one is refused later, with the reason, by :meth:`check_format`)."""
        return RunDir(path).config_path.is_file()

    @staticmethod
    def find(folder: str | Path) -> list[Path]:
        """Run directories under ``folder`` (any depth) that got as far as their run.json, in name order."""
        return sorted(p.parent for p in Path(folder).rglob("run.json") if RunDir.is_run_dir(p.parent))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory; raises :class:`RunDirError` when it is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"{run.path} is not a folder: give the run directory that `medclass train` printed")
        if not run.config_path.is_file():
            raise RunDirError(f"{run.path} has no config.yaml, so it is not a medclass run directory")
        return run

    def check_format(self) -> None:
        """Refuse run directories written in another format version (they may lack or misname files)."""
        if not self.status_path.is_file():
            raise RunDirError(f"{self.path} has no run.json; it is not a complete medclass run directory")
        version = read_json(self.status_path).get("format_version")
        if version != RUN_FORMAT_VERSION:
            newer = isinstance(version, int) and version > RUN_FORMAT_VERSION
            raise RunDirError(
                f"{self.status_path} says run format version {version!r}; this medclass reads version "
                f"{RUN_FORMAT_VERSION}: " + ("upgrade medclass to read it" if newer else
                                             "evaluate it with the medclass version that wrote it")
            )  # fmt: skip

    # Config and status -------------------------------------------------------------------------------------
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

    def read_status(self) -> dict[str, Any]:
        """run.json, or {} before it exists."""
        return read_json(self.status_path) if self.status_path.is_file() else {}

    def update_status(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json."""
        status = self.read_status() or {"format_version": RUN_FORMAT_VERSION}
        status.update(fields)
        atomic_write_json(self.status_path, status)

    # What training writes ----------------------------------------------------------------------------------
    def write_data_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.data_path, summary)

    def read_data_summary(self) -> dict[str, Any]:
        return self._read_required(self.data_path)

    def write_preprocessing(self, preprocessing: dict[str, Any]) -> None:
        atomic_write_json(self.preprocessing_path, preprocessing)

    def write_environment(self, environment: dict[str, Any]) -> None:
        atomic_write_json(self.environment_path, environment)

    def read_environment(self) -> dict[str, Any]:
        return read_json(self.environment_path) if self.environment_path.is_file() else {}

    def write_splits(self, rows: Iterable[tuple[str, ...]]) -> None:
        """splits.csv: (file, split, label[, group]) of every image file (written only when there are files); the
        group is a keyed hash of the patient or lesion id, never the id."""
        rows = list(rows)
        if rows:
            header = ("file", "split", "label", "group")[: len(rows[0])]
            atomic_write_text(self.splits_path, _csv([header, *rows]))

    def write_skipped(self, rows: Iterable[tuple[str, str]]) -> None:
        """skipped.csv: (file, reason) of every file left out (written only when some were)."""
        rows = list(rows)
        if rows:
            atomic_write_text(self.skipped_path, _csv([("file", "reason"), *rows]))

    def existing_checkpoint(self, which: str = "best") -> Path:
        """The checkpoint file, or a :class:`RunDirError` saying which are there."""
        path = self.checkpoint_path(check_checkpoint(which))
        if not path.is_file():
            present = sorted(p.stem for p in self.checkpoint_dir.glob("*.ckpt")) if self.checkpoint_dir.is_dir() else []
            found = (
                f"it has {', '.join(present)}" if present else "it has no checkpoints (did training finish an epoch?)"
            )
            raise RunDirError(f"{self.path} has no {which} checkpoint ({path.name}); {found}")
        return path

    # What evaluation writes --------------------------------------------------------------------------------
    def write_metrics(self, split: str, checkpoint: str, metrics: dict[str, Any]) -> Path:
        return atomic_write_json(self.metrics_path(split, checkpoint), metrics)

    def read_metrics(self, split: str = "test", checkpoint: str = "best") -> dict[str, Any]:
        return self._read_required(self.metrics_path(split, checkpoint))

    def has_metrics(self, split: str = "test", checkpoint: str = "best") -> bool:
        return self.metrics_path(split, checkpoint).is_file()

    def write_calibration(self, checkpoint: str, calibration: dict[str, Any]) -> Path:
        return atomic_write_json(self.calibration_path(checkpoint), calibration)

    def read_calibration(self, checkpoint: str = "best") -> dict[str, Any]:
        """The stored calibration, or {} when the checkpoint was never evaluated."""
        path = self.calibration_path(checkpoint)
        return read_json(path) if path.is_file() else {}

    def write_predictions(self, split: str, text: str) -> Path:
        return atomic_write_text(self.predictions_path(split), text)

    def _read_required(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise RunDirError(f"{self.path} has no {path.name}; was the run finished?")
        return read_json(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _csv(rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


SERIES_FORMAT_VERSION = 1

# What a series folder holds (cross-validation folds, seed repeats): its README table.
SERIES_LAYOUT: tuple[tuple[str, str], ...] = (
    ("`series.json`", "what the series is (cv or seeds), its members (fold, seed), the shared config; later calls "
     "with another config are refused"),
    ("`<member>/<YYYYmmdd-HHMMSS>/`", "each member (`fold1`, `seed3`, `fold2-seed3`) is an ordinary run directory"),
    ("`summary.json`", "mean, SD, min and max of every headline metric over the members, the headline and why, "
     "cross-validation: the pooled out-of-fold metrics with 95% intervals"),
    ("`summary.md`, `members.csv`, `members.png`", "the same as a table, one row per member, and a plot of each "
     "member's metrics around the mean"),
    ("`label_issues.csv`, `label_issues.png`", "cross-validation, with cleanlab installed: the train+val images whose "
     "label the out-of-fold model doubts (cleanlab), most doubtful first (source, given and suggested label, "
     "self-confidence), and a contact sheet of the top 25"),
    ("`ensemble/`", "the members as one model package (probabilities averaged) that predict, serve, export and "
     "features read; its test metrics and each member's are in `summary.json` and `summary.md`"),
)  # fmt: skip


class SeriesDir:
    """A folder of several runs of one recipe (``medclass cv``, ``medclass train --seeds``): file names, the
    manifest, and where each member's runs live."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / "series.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def summary_markdown(self) -> Path:
        return self.path / "summary.md"

    @property
    def members_csv(self) -> Path:
        return self.path / "members.csv"

    @property
    def label_issues_csv(self) -> Path:
        return self.path / "label_issues.csv"

    @property
    def label_issues_sheet(self) -> Path:
        return self.path / "label_issues.png"

    @property
    def members_plot(self) -> Path:
        return self.path / "members.png"

    @property
    def ensemble_dir(self) -> Path:
        return self.path / "ensemble"

    def member_folder(self, name: str) -> Path:
        return self.path / name

    @staticmethod
    def is_series_dir(path: str | Path) -> bool:
        return SeriesDir(path).manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise RunDirError(
                f"{self.path} has no {self.manifest_path.name}: give the folder that `medclass cv` or "
                "`medclass train --seeds` printed"
            )
        manifest = read_json(self.manifest_path)
        version = manifest.get("format_version")
        if version != SERIES_FORMAT_VERSION:
            raise RunDirError(
                f"{self.manifest_path} says series format version {version!r}; this medclass reads version "
                f"{SERIES_FORMAT_VERSION}"
            )
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, {"format_version": SERIES_FORMAT_VERSION, **manifest})

    def finished_run(self, member: str) -> RunDir | None:
        """The member's newest finished run directory, if any."""
        folder = self.member_folder(member)
        if not folder.is_dir():
            return None
        finished = [RunDir(p) for p in RunDir.find(folder) if RunDir(p).read_status().get("status") == "finished"]
        return finished[-1] if finished else None

    def __repr__(self) -> str:
        return f"SeriesDir({str(self.path)!r})"


class TuneDir:
    """The folder of a ``medclass tune`` search: its study, its trials (run directories) and what it found."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def study_path(self) -> Path:
        return self.path / "study.db"

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    @property
    def trials_csv(self) -> Path:
        return self.path / "trials.csv"

    @property
    def summary_markdown(self) -> Path:
        return self.path / "summary.md"

    @property
    def best_config_path(self) -> Path:
        return self.path / "best.yaml"

    def plot_path(self, name: str) -> Path:
        return self.path / f"{name}.png"


class EvaluationDir:
    """Where ``medclass evaluate PACKAGE -c CONFIG`` writes a package's evaluation on a dataset."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @staticmethod
    def default(package: Path, dataset: str, split: str) -> EvaluationDir:
        """Beside the package: ``<its folder>/evaluation_<dataset>_<split>/``."""
        return EvaluationDir(Path(package).resolve().parent / f"evaluation_{dataset}_{split}")

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.csv"


class ExternalDir(EvaluationDir):
    """Where ``medclass evaluate MODEL --external NAME=PATH`` writes a model's results on one external set:
    ``RUN/external/NAME/`` for a run, ``external/NAME/`` beside a package or .onnx file (metrics.json and
    predictions.csv as a package's evaluation, plus these)."""

    @property
    def skipped_path(self) -> Path:
        return self.path / "skipped.csv"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    @property
    def copies_path(self) -> Path:
        """Thumbnails of the set's copies of training images and of its own copies (absent when it has none)."""
        return self.path / "copies.png"
