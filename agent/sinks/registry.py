"""Sink registry: URI scheme -> sink class, filled by each sink module."""

from __future__ import annotations

import importlib
from typing import TypeVar

from ..errors import ConfigError
from .base import Sink

__all__ = ["MODULES", "get", "register", "schemes", "split_uri"]

#: sink modules of the package; importing one registers its scheme(s)
MODULES: tuple[str, ...] = ("stdout", "file", "archive", "socket", "nats")

_REGISTRY: dict[str, type[Sink]] = {}

S = TypeVar("S", bound=type[Sink])


def register(cls: S) -> S:
    if cls.scheme in _REGISTRY and _REGISTRY[cls.scheme] is not cls:
        raise RuntimeError(f"sink scheme {cls.scheme!r} registered twice")
    _REGISTRY[cls.scheme] = cls
    return cls


def _load() -> None:
    for mod in MODULES:
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise


def split_uri(uri: str) -> tuple[str, str]:
    """``"file:/x"`` -> ``("file", "/x")``; ``nats://h:p/s`` keeps its ``//``."""
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme:
        raise ConfigError(f"not an endpoint URI: {uri!r} (expected SCHEME:TARGET)", key="uri")
    return scheme.lower(), rest


def schemes() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get(scheme: str) -> type[Sink]:
    _load()
    try:
        return _REGISTRY[scheme]
    except KeyError:
        known = ", ".join(f"{s}:" for s in sorted(_REGISTRY))
        raise ConfigError(f"unknown sink scheme {scheme!r} (known: {known})", key="uri") from None
