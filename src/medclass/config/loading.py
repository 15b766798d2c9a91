"""Load an experiment config from YAML, apply ``dotted.key=value`` overrides, and validate it.

Validation errors are turned into one line that names each bad field, says what was wrong and, for unknown keys,
suggests the closest valid ones.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from medclass.config.data import source_config_class
from medclass.config.schema import ExperimentConfig
from medclass.errors import ConfigError, suggest

M = TypeVar("M", bound=BaseModel)


MAX_YAML_NODES = 100_000  # a config is a few hundred values; far more means aliases expanding into a bomb


def expanded_size(node: yaml.Node, memo: dict[int, int] | None = None) -> int:
    """How many nodes ``node`` becomes once every alias is expanded, counted without expanding (each shared node
    once, times the number of places that use it)."""
    memo = {} if memo is None else memo
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a node that reaches itself again counts once (recursive aliases)
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in node.value)
    return memo[key]


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` that refuses a document whose aliases would expand past MAX_YAML_NODES values (nested
    aliases, the "billion laughs", cost minutes and gigabytes once validated or copied)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}: its aliases (*name) would expand to {size:,} values (more than {MAX_YAML_NODES:,}); a "
                "config needs a few hundred: write the values out, or use fewer nested aliases"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; a missing file or bad YAML is a :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: give a config file (.yaml) inside it")
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: check the path (configs/ holds the shipped ones)")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"), str(path))
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
            value = safe_yaml(raw_value, f"override {key}")
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


def validate_config(data: Mapping[str, Any], origin: str = "config", schema: type[M] = ExperimentConfig) -> M:  # type: ignore[assignment]
    """Validate a raw mapping against a schema (the experiment config by default); errors become one
    :class:`ConfigError` line naming the fields."""
    raw = dict(data)
    described: list[tuple[str, str]] = []
    data_failed = False
    # The data section is validated first, as its registered source's class (medclass.registry.SOURCE_CONFIGS),
    # so that its errors name fields as the user wrote them (data.flag, not a union member's path).
    if "data" in schema.model_fields and isinstance(raw.get("data"), Mapping):
        section = dict(raw["data"])
        try:
            model = source_config_class(section)
            raw["data"] = model.model_validate(section)
        except ValueError as exc:  # ValidationError is one
            data_failed = True
            if isinstance(exc, ValidationError):
                described += [(f"data.{f}" if f else "data", p) for f, p in
                              (_describe_error(err, section, model) for err in exc.errors())]  # fmt: skip
            else:
                described.append(("data.source", str(exc)))
    try:
        config = schema.model_validate(raw)
    except ValidationError as exc:
        # A value that fits none of a union's members (batch_size: 0 for "int > 0 or auto") gives one error per
        # member: joined into one problem per field.
        for err in exc.errors():
            if data_failed and err["loc"][:1] == ("data",):
                continue  # already said, by field
            described.append(_describe_error(err, raw, schema))
    if not described:
        return config
    grouped: dict[str, list[str]] = {}
    for field, problem in described:
        grouped.setdefault(field, []).append(problem)
    problems = [_join_alternatives(field, texts) for field, texts in grouped.items()]
    raise ConfigError(f"{origin}: " + "; ".join(problems)) from None


def _join_alternatives(field: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{field}: {problems[0]}" if field else problems[0]
    got = re.search(r" \(got .*\)$", problems[0])
    suffix = got.group(0) if got and all(p.endswith(got.group(0)) for p in problems) else ""
    texts = list(dict.fromkeys(p.removesuffix(suffix) for p in problems))
    lead = "Input should be "
    if all(text.startswith(lead) for text in texts):
        return f"{field}: {lead}{' or '.join(t.removeprefix(lead) for t in texts)}{suffix}"
    return f"{field}: {' or '.join(texts)}{suffix}"


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
    """Expand ``~`` and ``$VARS`` in the config's paths and make relative ones absolute (against the current
    folder, where the user typed them). Paths of a Kaggle dataset stay relative to its downloaded folder."""
    data = config.data
    updates = {}
    for name in type(data).model_fields:  # every path field of the source's class, whatever the source
        value = getattr(data, name)
        if isinstance(value, Path):
            relative_to_download = getattr(data, "kaggle", None) and name != "cache_dir"
            updates[name] = expand_path(value, absolute=not relative_to_download)
    return config.model_copy(
        update={"output_dir": expand_path(config.output_dir), "data": data.model_copy(update=updates)}
    )


def expand_path(path: Path, absolute: bool = True) -> Path:
    """``~`` and ``$VARS`` expanded; made absolute against the current folder unless told not to."""
    expanded = Path(os.path.expandvars(str(path))).expanduser()
    return expanded.absolute() if absolute else expanded


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain JSON-compatible dict of the config (paths as strings, tuples as lists)."""
    return config.model_dump(mode="json")


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML text, loadable again with :func:`load_config`."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _describe_error(err: Mapping[str, Any], data: Mapping[str, Any], schema: type[BaseModel]) -> tuple[str, str]:
    """(field, problem) for one pydantic error."""
    loc = _user_loc(tuple(str(p) for p in err["loc"]))
    field = ".".join(loc) if loc else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], data, schema)
        hint = suggest(loc[-1], model.model_fields) if model is not None else ""
        return field, f"unknown field{hint}"
    if kind == "missing":
        return field, "required field is missing"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in err and kind not in {"model_type", "dict_type"} and not kind.startswith("value_error"):
        return field, f"{message} (got {err['input']!r})"
    return field, message


_UNION_MEMBER = re.compile(r"^(constrained-\w+|literal\[.*\]|bool|int|float|str|none|function-\w+\[.*\])$")


def _user_loc(loc: tuple[str, ...]) -> tuple[str, ...]:
    """Drop the union member pydantic puts in a location (data.batch_size.constrained-int -> data.batch_size)."""
    return tuple(part for part in loc if not _UNION_MEMBER.match(part))


def _model_at(loc: tuple[str, ...], data: Mapping[str, Any], schema: type[BaseModel]) -> type[BaseModel] | None:
    """The schema class that holds the fields at ``loc`` (``()`` is the top level), or None."""
    model: type[BaseModel] = schema
    raw: Any = data
    for part in loc:
        raw = raw.get(part) if isinstance(raw, Mapping) else None
        if model is ExperimentConfig and part == "data":
            try:
                model = source_config_class(raw if isinstance(raw, Mapping) else {})
            except ValueError:
                return None
            continue
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
