"""medclass: train, evaluate, compare and deploy image classifiers on medical images.

The Python API mirrors the CLI::

    from medclass import load_config, run_experiment, evaluate_run
    config = load_config("configs/breastmnist.yaml", ["trainer.max_epochs=3"])
    result = run_experiment(config)      # train, then evaluate the best checkpoint on the test split
    evaluate_run(result.run_dir, checkpoint="last", split="val")

``train`` alone trains (the run directory is left ``trained``, without test metrics or report).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from medclass.lazy import lazy_exports

try:
    __version__ = version("medclass")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

# The public API is imported on first use, so `medclass --help` and config errors do not wait for torch/Lightning.
_API = {
    "ExperimentConfig": "medclass.config",
    "load_config": "medclass.config",
    "UserError": "medclass.errors",
    "evaluate_run": "medclass.evaluation",
    "train": "medclass.training",
    "resume_experiment": "medclass.experiments",
    "run_experiment": "medclass.experiments",
}

if TYPE_CHECKING:
    from medclass.config import ExperimentConfig, load_config
    from medclass.errors import UserError
    from medclass.evaluation import evaluate_run
    from medclass.experiments import resume_experiment, run_experiment
    from medclass.training import train

__getattr__, __dir__ = lazy_exports(__name__, _API)


__all__ = [
    "ExperimentConfig",
    "UserError",
    "__version__",
    "evaluate_run",
    "load_config",
    "resume_experiment",
    "run_experiment",
    "train",
]
