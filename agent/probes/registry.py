"""Probe registry: name -> probe class, filled by each probe module itself."""

from __future__ import annotations

from ..registry import Registry
from .base import Probe

__all__ = ["MODULES", "get", "names", "register"]

#: every probe module of the package; importing one registers its probe
MODULES: tuple[str, ...] = ("cgroup", "lve", "mounts", "taskstats", "link")

_probes: Registry[type[Probe]] = Registry(__package__ or "agent.probes", MODULES, lambda c: c.name, "probe name")

register = _probes.register
names = _probes.names
get = _probes.get
