"""What a model argument names, told without importing torch, timm or Lightning (seconds on a small CPU): the
commands that read a model check their argument with these first, so a mistyped path is answered at once."""

from __future__ import annotations

from pathlib import Path

from medclass.errors import ModelError

MANIFEST = "medclass-model.json"
REGISTERED = "models:/"  # an MLflow model registry URI: models:/<name>/<version>


def is_package(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def check_model_spec(spec: str | Path) -> None:
    """Refuse a model argument that names nothing: neither a registered model nor an existing file or folder."""
    if not str(spec).startswith(REGISTERED) and not Path(spec).exists():
        raise ModelError(f"{spec} does not exist: give a model package, a run directory or an .onnx file")
