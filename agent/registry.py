"""A name -> class registry filled by the modules that define the classes.

Probes register by name and sinks by URI scheme; both are looked up from
configuration. The registry imports its package's modules lazily, on the first
look-up, so a module that is absent (an optional part) is simply not there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    def __init__(self, package: str, modules: tuple[str, ...], key: Callable[[T], str], what: str) -> None:
        self.package = package
        self.modules = modules
        self._key = key
        self._what = what
        self._classes: dict[str, T] = {}
        self._loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` findable by its key."""
        name = self._key(cls)
        if self._classes.get(name, cls) is not cls:
            raise RuntimeError(f"{self._what} {name!r} registered twice")
        self._classes[name] = cls
        return cls

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first, so a module that looks something up while importing does not recurse
        for mod in self.modules:
            try:
                importlib.import_module(f"{self.package}.{mod}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{self.package}.{mod}":
                    raise

    def names(self) -> list[str]:
        """Registered keys: the package's own modules' order first, then others by name."""
        self._load()
        order = {n: i for i, n in enumerate(self.modules)}
        return sorted(self._classes, key=lambda n: (order.get(n, len(order)), n))

    def get(self, name: str) -> T:
        """The class registered as ``name``; KeyError if none is."""
        self._load()
        return self._classes[name]
