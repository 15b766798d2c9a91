"""Name -> entry registries, as timm registers its models: adding a data source, head, augmentation, degradation,
corruption or schedule is registering one entry (decorating one function, or registering one value), and the
config accepts its name from then on.

The registries live here, below the config, so that the schema can validate a name against its registry (with the
closest names when it is wrong) without depending on the packages that fill them. Each registry knows the module
that registers its built-in entries and imports it by name the first time an entry is read (the way plugins are
found through entry points); a module that registers more entries imports the registry from here. The built-in
names are also written below, so that checking a config's names costs no torch import (a config error is
reported in a fraction of a second); tests/test_extension.py checks that each list equals what its module
registers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import AfterValidator

from medclass.errors import ConfigError, suggest

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str, builtins: str | None = None, names: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.kind = kind
        self.builtins = builtins  # the module that registers the built-in entries, imported on first read
        self.builtin_names = names  # what that module registers, known without importing it
        self._loading = builtins is None

    def known(self) -> list[str]:
        """Every name a config may use: the built-in ones and those registered so far, without loading entries."""
        if self.builtins is not None and not self.builtin_names:
            self._load()  # no list of the built-in names: the module has to say
        return list(dict.fromkeys([*self.builtin_names, *dict.keys(self)]))

    def _load(self) -> None:
        if not self._loading:
            self._loading = True
            importlib.import_module(self.builtins)  # type: ignore[arg-type]

    # Every read loads the built-ins first.
    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)

    def __getitem__(self, name: str) -> T:
        self._load()
        return super().__getitem__(name)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        self._load()
        return super().get(name, default)

    def keys(self):  # type: ignore[override]
        self._load()
        return super().keys()

    def values(self):  # type: ignore[override]
        self._load()
        return super().values()

    def items(self):  # type: ignore[override]
        self._load()
        return super().items()

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if dict.__contains__(self, name):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = entry
            return entry

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register one of their own clean up with this)."""
        dict.pop(self, name, None)

    def lookup(self, name: str, field: str) -> T:
        """The entry called ``name``; an unknown name is a :class:`ConfigError` naming ``field``."""
        if name not in self:
            raise ConfigError(f"{field}: {self.unknown(name)}")
        return self[name]

    def unknown(self, name: str, among: Iterable[str] | None = None) -> str:
        """The message for a name that is not registered (with the closest known names)."""
        known = self.known() if among is None else list(among)
        if name in self.known() and name not in known:
            return f"{self.kind} {name!r} cannot be used here; choose one of {', '.join(known)}"
        return f"unknown {self.kind} {name!r}{suggest(name, known)}; known: {', '.join(known)}"


def registered(registry: Registry, among: Callable[[], Iterable[str]] | None = None) -> AfterValidator:
    """A pydantic validator for a config field that names an entry of ``registry`` (or of ``among()``, a subset),
    checked when the config is validated, so that registering an entry is all it takes to make it a valid value."""

    def check(name: str) -> str:
        known = registry.known() if among is None else list(among())
        if name not in known:
            raise ValueError(registry.unknown(name, known))
        return name

    return AfterValidator(check)


# The registries. Entries: see the modules named here. A data source is two entries under one name: its config
# class (the fields of its data: section, validated with the config) and its loader (medclass.data.sources).
SOURCE_CONFIGS: Registry[Any] = Registry("source", "medclass.config.data")  # data.source -> config class
SOURCES: Registry[Any] = Registry("source", "medclass.data.sources", ("medmnist", "folder", "csv"))  # -> loader
HEADS: Registry[Any] = Registry("head", "medclass.models.heads", ("linear", "mlp"))  # model.head.type -> HeadSpec
AUGMENTATIONS: Registry[Any] = Registry(
    "augmentation", "medclass.data.transforms", ("none", "light", "medical")
)  # data.augmentation -> spec
DEGRADATIONS: Registry[Any] = Registry(
    "degradation", "medclass.data.degrade", ("blur", "noise", "jpeg", "downscale", "exposure", "motion_blur")
)  # low_quality.degradations -> function
CORRUPTIONS: Registry[Any] = Registry("corruption", "medclass.data.corruptions")  # evaluate --corruptions
SCHEDULES: Registry[Any] = Registry(
    "schedule", "medclass.training.schedule", ("constant", "cosine", "step", "onecycle", "plateau")
)  # scheduler.name -> shape
