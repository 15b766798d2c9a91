"""Name -> factory registries (sources, augmentations, degradations, ...), as timm registers its models:
adding an entry is decorating one function
(or registering one value)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

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
            raise ConfigError(f"{field}: unknown {self.kind} {name!r}{suggest(name, self)}; known: {', '.join(self)}")
        return self[name]
