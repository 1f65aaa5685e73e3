"""Probe registry: name -> probe class, filled by each probe module itself."""

from __future__ import annotations

import importlib
from typing import TypeVar

from .base import Probe

__all__ = ["MODULES", "get", "names", "register"]

#: every probe module of the package; importing one registers its probe
MODULES: tuple[str, ...] = ("cgroup", "lve", "mounts", "taskstats", "link")

_REGISTRY: dict[str, type[Probe]] = {}

P = TypeVar("P", bound=type[Probe])


def register(cls: P) -> P:
    """Class decorator: make ``cls`` selectable by ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"probe name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    for mod in MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            # a probe module not written yet is simply absent
            if exc.name != f"{__package__}.{mod}":
                raise


def names() -> list[str]:
    """Registered probe names, in the order of :data:`MODULES`."""
    _load()
    order = {n: i for i, n in enumerate(MODULES)}
    return sorted(_REGISTRY, key=lambda n: (order.get(n, len(order)), n))


def get(name: str) -> type[Probe]:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(name) from None
