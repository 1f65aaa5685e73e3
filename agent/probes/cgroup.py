"""``cgroup``: polled readings of cgroup v2 files, one reading per leaf cgroup.

Per leaf (subject: its path relative to the root, ``/system.slice/foo.service``)
the output holds ``memory_events``, ``cpu_stat``, ``pids_events`` (flat dicts of
ints), ``memory_current``, ``memory_max`` (``null`` = no limit) and ``psi`` for
the files that exist, and ``deltas``: counters since the previous reading of
the same cgroup (``null`` on first sight). Field by field: ``docs/probes.md``.
:meth:`CgroupProbe.watch` adds ``cgroup.change`` readings as the kernel
notifies (see :mod:`agent.watch.cgroups`).

A whole scan (walk, reads, parsing) runs in one worker-thread hop, so the
event loop is never blocked by it. A leaf that vanishes mid-scan, or a file
that does not parse, becomes an error reading for that leaf alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio.to_thread

from ..errors import ParseError, ProbeError
from ..hostfs import COUNTER_KEYS, DeltaTracker, HostFS, LeafScan, scan_cgroups
from ..hostfs.reader import CGROUP_SUPER_MAGIC, fs_magic
from ..model import Reading
from ..watch.cgroups import CgroupWatchOptions, watch_cgroups
from .base import Emit, Probe, ProbeContext
from .registry import register

__all__ = ["CgroupOptions", "CgroupProbe", "resolve_root"]

#: the contract's default root, used as is when it is the cgroup2 mount itself
DEFAULT_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True, slots=True)
class CgroupOptions:
    """``[probes.cgroup]`` keys."""

    #: the cgroup2 hierarchy to walk; default: found in ``mountinfo`` (``/sys/fs/cgroup`` on unified hosts)
    root: str | None = None
    #: where the cgroup2 mount is looked up when ``root`` is not set
    mountinfo: str = "/proc/self/mountinfo"
    #: leaf paths to report (fnmatch globs on paths relative to the root); empty: every leaf
    include: tuple[str, ...] = ()
    #: paths to skip with everything below them
    exclude: tuple[str, ...] = ()
    #: cgroups at this depth (the root is 0) count as leaves; none: no limit
    max_depth: int | None = None
    #: at most this many leaves per scan; beyond it one error reading says so
    max_leaves: int = 10000
    #: change events (``[probes.cgroup.watch]``): notification files, PSI triggers, created/removed cgroups
    watch: CgroupWatchOptions = field(default_factory=CgroupWatchOptions)

    def __post_init__(self) -> None:
        if self.root == "":
            raise ValueError("root must not be empty (leave it out to find the cgroup v2 mount)")
        if self.root is not None and "\0" in self.root:
            raise ValueError("root must not hold a NUL character")
        if not self.mountinfo:
            raise ValueError("mountinfo must not be empty")
        if self.max_depth is not None and self.max_depth < 0:
            raise ValueError("max_depth must be 0 or more")
        if self.max_leaves < 1:
            raise ValueError("max_leaves must be at least 1")


def _is_cgroup_v1(root: str) -> bool:
    """Whether ``root`` is on a cgroup v1 file system (anything that cannot be opened is left to the scan)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fs_magic(fd) == CGROUP_SUPER_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def resolve_root(options: CgroupOptions) -> str | None:
    """The root to walk: ``options.root``, else the cgroup2 mount from mountinfo (``None`` if none)."""
    if options.root is not None:
        return options.root
    try:
        return HostFS("/").cgroup2_mount(options.mountinfo)
    except (OSError, ParseError):
        return None


@register
class CgroupProbe(Probe):
    name: ClassVar[str] = "cgroup"
    Options: ClassVar[type[Any]] = CgroupOptions
    carried: ClassVar[tuple[str, ...]] = ("_deltas",)

    def __init__(self, options: CgroupOptions, ctx: ProbeContext | None = None) -> None:
        super().__init__(options, ctx or ProbeContext())
        self._root: str | None = None
        self._deltas = DeltaTracker()

    @classmethod
    def unavailable(cls, options: Any) -> str | None:
        root = resolve_root(options)
        if root is None:
            return f"no cgroup2 mount in {options.mountinfo}"
        if not HostFS("/").path(root).joinpath("cgroup.controllers").exists():
            return f"{root} is not a cgroup v2 hierarchy"
        return None

    @property
    def root(self) -> str:
        if self._root is None:
            root = resolve_root(self.options)
            if root is None:
                raise ProbeError(f"no cgroup2 mount in {self.options.mountinfo}")
            if _is_cgroup_v1(root):  # its files have other names and units: never read them as v2's
                raise ProbeError(f"{root} is a cgroup v1 hierarchy; the cgroup probe reads cgroup v2 (the unified "
                                 "hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified in hybrid mode)")
            self._root = root
        return self._root

    def _scan(self, root: str) -> list[LeafScan]:
        o: CgroupOptions = self.options
        return scan_cgroups(root, include=o.include, exclude=o.exclude, max_depth=o.max_depth,
                            limit=o.max_leaves + 1)

    def provenance(self) -> tuple[str, tuple[str, ...]]:
        root = self._root or resolve_root(self.options)
        if root is None:  # looked for in mountinfo, and not found there
            return f"procfs:{self.options.mountinfo}", (self.options.mountinfo,)
        return f"cgroup2:{root}", (root,)

    async def collect(self) -> Sequence[Reading]:
        root = self.root
        scans = await anyio.to_thread.run_sync(self._scan, root)
        now = time.time()
        source = f"cgroup2:{root}"
        readings: list[Reading] = []
        limit = self.options.max_leaves
        for scan in scans[:limit]:
            if scan.output is None:
                self._deltas.forget(scan.path)
                readings.append(Reading(probe=self.name, subject=scan.path, output={}, inputs=scan.inputs,
                                        probe_source=source, error=scan.error, time=now))
                continue
            counters = {k: scan.output[k] for k in COUNTER_KEYS if k in scan.output}
            output = dict(scan.output)
            output["deltas"] = self._deltas.update(scan.path, counters, now, identity=scan.inode)
            readings.append(Reading(probe=self.name, subject=scan.path, output=output, inputs=scan.inputs,
                                    probe_source=source, time=now))
        if len(scans) > limit:
            readings.append(Reading(probe=self.name, subject="/", output={}, probe_source=source, time=now,
                                    error=f"more than max_leaves={limit} leaves under {root}; the rest skipped"))
        self._deltas.retain(s.path for s in scans[:limit])
        return readings

    async def watch(self, emit: Emit) -> None:
        o: CgroupOptions = self.options
        if not o.watch.enabled:
            return
        try:
            root = self.root
        except ProbeError as exc:  # it still says where the root was looked for (the mountinfo)
            try:
                source, inputs = self.provenance()
            except ProbeError:
                source, inputs = f"procfs:{o.mountinfo}", (o.mountinfo,)
            await emit(Reading(probe=self.name, subject="/", output={}, kind="change", probe_source=source,
                               inputs=inputs, error=f"cgroup change events not started: {exc}"))
            return
        await watch_cgroups(emit, root, o.watch, probe=self.name, include=o.include, exclude=o.exclude,
                            max_depth=o.max_depth)
