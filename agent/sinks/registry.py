"""Sink registry: URI scheme -> sink class, filled by each sink module."""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .base import Sink

__all__ = ["MODULES", "get", "register", "schemes", "split_uri"]

#: sink modules of the package; importing one registers its scheme(s)
MODULES: tuple[str, ...] = ("stdout", "file", "archive", "socket", "nats")

_sinks: Registry[type[Sink]] = Registry(__package__ or "agent.sinks", MODULES, lambda c: c.scheme, "sink scheme")

register = _sinks.register


def split_uri(uri: str) -> tuple[str, str]:
    """``"file:/x"`` -> ``("file", "/x")``; ``nats://h:p/s`` keeps its ``//``."""
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme:
        raise ConfigError(f"not an endpoint URI: {uri!r} (expected SCHEME:TARGET)", key="uri")
    return scheme.lower(), rest


def schemes() -> list[str]:
    return sorted(_sinks.names())


def get(scheme: str) -> type[Sink]:
    try:
        return _sinks.get(scheme)
    except KeyError:
        known = ", ".join(f"{s}:" for s in schemes())
        raise ConfigError(f"unknown sink scheme {scheme!r} (known: {known})", key="uri") from None
