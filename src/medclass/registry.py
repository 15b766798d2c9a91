"""Name -> factory registries (sources, augmentations, degradations, ...), as timm registers its models:
adding an entry is decorating one function
(or registering one value)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from pydantic import AfterValidator

from medclass.errors import ConfigError, suggest

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(factory: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = factory
            return factory

        return decorator

    def lookup(self, name: str, field: str) -> T:
        """The entry called ``name``; an unknown name is a :class:`ConfigError` naming ``field``."""
        if name not in self:
            raise ConfigError(f"{field}: {self.unknown(name)}")
        return self[name]

    def unknown(self, name: str, among: Iterable[str] | None = None) -> str:
        """The message for a name that is not registered (with the closest known names)."""
        known = list(self if among is None else among)
        if name in self and name not in known:
            return f"{self.kind} {name!r} cannot be used here; choose one of {', '.join(known)}"
        return f"unknown {self.kind} {name!r}{suggest(name, known)}; known: {', '.join(known)}"


def registered(registry: Registry, among: Callable[[], Iterable[str]] | None = None) -> AfterValidator:
    """A pydantic validator for a config field that names an entry of ``registry`` (or of ``among()``, a subset),
    checked when the config is validated, so that registering an entry is all it takes to make it a valid value."""

    def check(name: str) -> str:
        known = list(registry if among is None else among())
        if name not in known:
            raise ValueError(registry.unknown(name, known))
        return name

    return AfterValidator(check)
