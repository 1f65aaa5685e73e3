"""Sinks: where signed events go. One module per kind, registered by URI scheme."""

from .base import NoSinkOptions, Sink, SinkContext
from .registry import get, register, schemes, split_uri

__all__ = ["NoSinkOptions", "Sink", "SinkContext", "get", "register", "schemes", "split_uri"]
