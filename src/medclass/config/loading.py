"""Load an experiment config from YAML, apply ``dotted.key=value`` overrides, and validate it.

Validation errors are turned into one line that names each bad field, says what was wrong and, for unknown keys,
suggests the closest valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medclass.config.schema import ExperimentConfig
from medclass.errors import ConfigError, suggest


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; a missing file or bad YAML is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: check the path (configs/ holds the shipped ones)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config must be UTF-8 YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (data:, model:, ...), not a {type(data).__name__}"
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` override set; values are parsed as YAML scalars/lists."""
    result = _deep_copy(data)
    for override in overrides:
        key, sep, raw_value = override.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not p for p in parts):
            raise ConfigError(f"override {override!r} must look like section.field=value, e.g. trainer.max_epochs=3")
        try:
            value = yaml.safe_load(raw_value)
        except yaml.YAMLError:
            value = raw_value
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {override!r}: {where} is a value, not a section with fields")
            node = child
        node[parts[-1]] = value
    return result


def validate_config(data: Mapping[str, Any], origin: str = "config") -> ExperimentConfig:
    """Validate a raw mapping against the schema; errors become one :class:`ConfigError` line naming the fields."""
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = [_describe_error(err, data) for err in exc.errors()]
        raise ConfigError(f"{origin}: " + "; ".join(problems)) from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), **sections: Any) -> ExperimentConfig:
    """Load and validate an experiment config.

    ``path`` is a YAML file (optional), ``overrides`` are ``dotted.key=value`` strings applied on top, and keyword
    ``sections`` (e.g. ``data={...}``) are merged in first, so the Python API and the CLI build configs the same way.
    Relative ``output_dir`` and ``data.root`` are made absolute so the resolved config works from any folder.
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    for name, value in sections.items():
        data[name] = _merge(data.get(name), value)
    if "experiment" not in data and path is not None:
        data["experiment"] = Path(path).stem
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    origin = str(path) if path is not None else "config"
    if overrides:
        origin += " with overrides " + " ".join(overrides)
    config = validate_config(data, origin)
    return resolve_paths(config)


def resolve_paths(config: ExperimentConfig) -> ExperimentConfig:
    """Make the config's relative paths absolute (against the current folder, where the user typed them)."""
    updates: dict[str, Any] = {"output_dir": config.output_dir.expanduser().absolute()}
    data = config.data
    if data.root is not None:
        data = data.model_copy(update={"root": data.root.expanduser().absolute()})
    return config.model_copy(update={**updates, "data": data})


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain JSON-compatible dict of the config (paths as strings, tuples as lists)."""
    return config.model_dump(mode="json")


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML text, loadable again with :func:`load_config`."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _describe_error(err: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    field = ".".join(loc) if loc else "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        hint = suggest(loc[-1], model.model_fields) if model is not None else ""
        return f"{field}: unknown field{hint}"
    if kind == "missing":
        return f"{field}: required field is missing"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in err and kind not in {"model_type", "dict_type"} and not kind.startswith("value_error"):
        return f"{field}: {message} (got {err['input']!r})"
    return f"{field}: {message}"


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The schema class that holds the fields at ``loc`` (``()`` is the top level), or None."""
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _merge(base: Any, update: Any) -> Any:
    if isinstance(base, dict) and isinstance(update, Mapping):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return update


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
