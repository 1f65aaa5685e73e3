"""Probes: one module per probe family, registered by name."""

from .base import Emit, NoOptions, Probe, ProbeContext
from .registry import get, names, register

__all__ = ["Emit", "NoOptions", "Probe", "ProbeContext", "get", "names", "register"]
