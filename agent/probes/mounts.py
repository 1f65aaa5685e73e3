"""``mounts``: health and capacity of remote mounts, on the host and in containers.

Host mounts come from ``proc_mounts``; those whose fstype matches ``fstypes``
(remote families by default) are checked. With ``containers = true`` every
container's mount namespace is found too (see :mod:`._mntns`): its remote
mounts are checked the same way and every other real file system in it gets
its capacity; pseudo file systems are skipped. A container's mount is reached
through ``/proc/PID/root``.

Every check runs in a child process with a deadline (see :mod:`._statchild`),
so a hung mount becomes ``status = "stale"`` within ``stat_timeout`` (plus the
start of a child) and never blocks the agent. One reading per mount (subject:
the target, or ``CONTAINER:TARGET``) and one summary reading (kind
``summary``). Field by field: ``docs/probes.md``.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import anyio.to_thread

from ..errors import ParseError, ProbeError
from ..hostfs.mounts import DEFAULT_REMOTE_FSTYPES, MountEntry, MountTable, fstype_matches, is_pseudo
from ..hostfs.mounts import parse_mount_table as _parse
from ..hostfs.reader import read_small
from ..model import Reading
from ..watch.mounts import MountWatchOptions, watch_mounts
from ._mntns import ForeignNamespace, NamespaceScan, scan_namespaces
from ._statchild import StatChecker, StatOutcome
from .base import Emit, Probe, ProbeContext
from .registry import register

__all__ = ["STALE_ERRNOS", "MountsOptions", "MountsProbe", "capacity", "is_stale", "reusable", "verdict"]

#: errors that mean the file system does not answer properly (the mount is stale), not just "no access"
STALE_ERRNOS = frozenset({
    errno.ESTALE, errno.ENOTCONN, errno.EIO, errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOLINK,
    errno.EREMOTEIO, errno.ESHUTDOWN,
})


@dataclass(frozen=True, slots=True)
class MountsOptions:
    """``[probes.mounts]`` keys."""

    #: the host's mount table (``/proc/mounts`` format, or mountinfo)
    proc_mounts: str = "/proc/mounts"
    #: fstype globs of the mounts to check on the host (and to check for staleness in containers)
    fstypes: tuple[str, ...] = DEFAULT_REMOTE_FSTYPES
    #: seconds a check may take before the mount is called stale
    stat_timeout: float = 5.0
    #: seconds an ok or read-only result is reused (a stale one never is)
    cache_ttl: float = 30.0
    #: also scan containers (other mount namespaces)
    containers: bool = True
    #: the procfs that shows the processes (container scanning, ``/proc/PID/root``)
    proc_root: str = "/proc"
    #: where the host's root is seen from the agent (``/host`` when it runs in a container)
    rootfs: str = "/"
    #: checks of remote mounts running at the same time (one child each); local ones share one more
    max_workers: int = 8
    #: change events (``[probes.mounts.watch]``): mounts added, removed, remounted; new remote mounts checked at once
    watch: MountWatchOptions = field(default_factory=MountWatchOptions)

    def __post_init__(self) -> None:
        for name in ("proc_mounts", "proc_root", "rootfs"):
            if not getattr(self, name) or "\0" in getattr(self, name):
                raise ValueError(f"{name} must be a path (not empty, no NUL character)")
        if not self.stat_timeout > 0:
            raise ValueError("stat_timeout must be greater than 0")
        if self.cache_ttl < 0:
            raise ValueError("cache_ttl must be 0 (no reuse) or more")
        if self.max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if any(not p for p in self.fstypes):
            raise ValueError("fstypes must not hold empty patterns")


@dataclass(frozen=True, slots=True)
class _Target:
    key: str
    subject: str
    entry: MountEntry
    path: str
    remote: bool
    input: str
    container: ForeignNamespace | None = None


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _under(root: str, path: str) -> str:
    return path if root in ("", "/") else root.rstrip("/") + "/" + path.lstrip("/")


#: the most of a mount table read (a line is about 150 bytes: room for some 100,000 mounts)
MAX_TABLE_BYTES = 16 << 20


def _read_table(path: str) -> MountTable:
    try:
        return _parse(read_small(path, MAX_TABLE_BYTES).decode("utf-8", "surrogateescape"), source=path)
    except OSError as exc:
        raise ProbeError(f"{path}: {exc.strerror or exc}") from None
    except ParseError as exc:
        raise ProbeError(str(exc)) from None


def _gather(o: MountsOptions) -> tuple[list[_Target], MountTable, NamespaceScan | None, int]:
    """Every mount to report (host remote mounts, container mounts), one per key; and how many were left out
    because a later mount on the same target hides them (a check reaches only the top one)."""
    host = _read_table(o.proc_mounts)
    targets: dict[str, _Target] = {}
    shadowed = 0
    for e in host.entries:
        if fstype_matches(e.fstype, o.fstypes):
            key = f"host:{e.target}"
            shadowed += key in targets
            targets[key] = _Target(key, e.target, e, _under(o.rootfs, e.target), True, o.proc_mounts)
    scan = scan_namespaces(o.proc_root) if o.containers else None
    for c in scan.containers if scan else ():
        ident = (c.hint and (c.hint.name or (c.hint.id or "")[:12])) or f"mntns-{c.mntns}"
        for e in c.table.entries:
            remote = fstype_matches(e.fstype, o.fstypes)
            if not remote and is_pseudo(e.fstype):
                continue
            key = f"mnt:[{c.mntns}]:{e.target}"
            path = f"{o.proc_root}/{c.pid}/root{'' if e.target == '/' else e.target}"
            shadowed += key in targets
            targets[key] = _Target(key, f"{ident}:{e.target}", e, path, remote, c.source, c)
    return list(targets.values()), host, scan, shadowed


def capacity(stats: Any) -> dict[str, Any]:
    """Sizes in bytes from a worker's ``statvfs`` answer, and the used share as ``df`` computes it."""
    frsize = int(stats["frsize"])
    size, free, avail = stats["blocks"] * frsize, stats["bfree"] * frsize, stats["bavail"] * frsize
    used = size - free
    return {
        "size_bytes": size, "used_bytes": used, "free_bytes": free, "avail_bytes": avail,
        "files": stats["files"], "files_free": stats["ffree"],
        "used_ratio": round(used / (used + avail), 4) if used + avail > 0 else None,
    }


def is_stale(outcome: StatOutcome) -> bool:
    """No answer in time (now or from an earlier, still blocked check), or an error that means a dead mount."""
    return outcome.timed_out or outcome.errno in STALE_ERRNOS


def reusable(outcome: StatOutcome, now: float, ttl: float) -> bool:
    """Whether a cached result may stand for this round: younger than ``ttl``, and an ``ok`` or ``readonly``
    one (a stale mount is checked again, and so is a failed check: it said nothing of the mount's health, and
    what failed it, a target not there yet, may be put right by the next round)."""
    if is_stale(outcome) or (outcome.error and outcome.errno not in _ANSWERS):
        return False
    return now - outcome.started < ttl


#: failures that are the file system's own answer: the mount responds
_ANSWERS = frozenset((errno.EACCES, errno.EPERM))


def verdict(entry: MountEntry, outcome: StatOutcome) -> dict[str, Any]:
    """``status`` (stale, then failed, then readonly, then ok), ``readonly``, ``error`` and ``capacity`` of one
    check. A check that failed otherwise than a dead mount fails, and without an answer of the file system
    (no such target, a name too long, no checker), says nothing of the mount's health: ``failed``, never
    ``ok``. A refusal (EACCES, EPERM) is an answer: the mount is alive."""
    stats = outcome.stats
    readonly = entry.readonly or bool(stats and stats.get("flag", 0) & os.ST_RDONLY)
    if is_stale(outcome):
        status = "stale"
    elif outcome.error and outcome.errno not in _ANSWERS:
        status = "failed"
    else:
        status = "readonly" if readonly else "ok"
    error = outcome.error
    if error and outcome.op and not outcome.timed_out:
        error = f"{outcome.op}: {error}"
    return {"status": status, "readonly": readonly, "error": error,
            "capacity": capacity(stats) if stats else None}


@register
class MountsProbe(Probe):
    name: ClassVar[str] = "mounts"
    Options: ClassVar[type[Any]] = MountsOptions
    default_interval: ClassVar[float] = 30.0

    def __init__(self, options: MountsOptions, ctx: ProbeContext | None = None) -> None:
        super().__init__(options, ctx or ProbeContext())
        self.checker = StatChecker(options.stat_timeout, max_workers=options.max_workers)
        self._cache: dict[str, tuple[MountEntry, StatOutcome]] = {}

    @classmethod
    def unavailable(cls, options: Any) -> str | None:
        if not os.access(options.proc_mounts, os.R_OK):
            return f"{options.proc_mounts} is not readable"
        return None

    def provenance(self) -> tuple[str, tuple[str, ...]]:
        return f"procfs:{self.options.proc_mounts}", (self.options.proc_mounts,)

    async def collect(self) -> Sequence[Reading]:
        o: MountsOptions = self.options
        self.checker.sweep()
        targets, host, scan, shadowed = await anyio.to_thread.run_sync(_gather, o)
        now = time.time()
        outcomes: dict[str, tuple[StatOutcome, bool]] = {}
        todo: list[_Target] = []
        for t in targets:
            hit = self._cache.get(t.key)
            if hit and hit[0] == t.entry and reusable(hit[1], now, o.cache_ttl):
                outcomes[t.key] = (hit[1], True)
            else:
                todo.append(t)
        todo.sort(key=lambda t: not t.remote)  # remote mounts get the first children
        for t, out in zip(todo, await self.checker.check_many([(t.key, t.path, t.remote) for t in todo]), strict=True):
            outcomes[t.key] = (out, False)
            self._cache[t.key] = (t.entry, out)
        for key in set(self._cache) - set(outcomes):
            del self._cache[key]
        readings = [self._reading(t, *outcomes[t.key]) for t in targets]
        readings.append(self._summary(readings, host, scan, len(todo), o, shadowed))
        return readings

    def _reading(self, t: _Target, outcome: StatOutcome, cached: bool) -> Reading:
        e = t.entry
        out: dict[str, Any] = {
            "source": e.source, "target": e.target, "fstype": e.fstype, "options": e.options,
            "proxmox_managed": e.proxmox_managed, "remote": t.remote,
        }
        out.update(verdict(e, outcome))
        out.update({
            "stale_since": _rfc3339(outcome.blocked_since),
            "checked_at": _rfc3339(outcome.started),
            "check_seconds": round(outcome.elapsed, 6),
            "cached": cached,
            "path": t.path,
            "namespace": "container" if t.container else "host",
            "container": None,
        })
        c = t.container
        if c is not None:
            h = c.hint
            out["container"] = {"mntns": c.mntns, "pid": c.pid, "runtime": h and h.runtime,
                                "id": h and h.id, "name": h and h.name}
        return Reading(probe=self.name, subject=t.subject, output=out, inputs=(t.input,),
                       probe_source=f"procfs:{t.input}")

    def _summary(self, readings: list[Reading], host: MountTable, scan: NamespaceScan | None, started: int,
                 o: MountsOptions, shadowed: int = 0) -> Reading:
        statuses = [r.output["status"] for r in readings]
        out: dict[str, Any] = {
            "mounts_total": len(readings),
            "remote_total": sum(1 for r in readings if r.output["remote"]),
            "ok_total": statuses.count("ok"),
            "readonly_total": statuses.count("readonly"),
            "stale_total": statuses.count("stale"),
            "failed_total": statuses.count("failed"),
            "shadowed_total": shadowed,
            "errors_total": sum(1 for r in readings if r.output["error"]),
            "proxmox_managed_total": sum(1 for r in readings if r.output["proxmox_managed"]),
            "containers": len(scan.containers) if scan else 0,
            "namespaces_skipped": scan.skipped if scan else 0,
            "scan_errors": list(scan.errors) if scan else [],
            "bad_lines": host.bad_lines,
            "checks_started": started,
            "checks_cached": len(readings) - started,
            "stuck_children": len(self.checker.stuck),
            "children_pending_exit": self.checker.pending_exit,
            "children_spawned": self.checker.spawned,
            "children_reaped": self.checker.reaped,
        }
        inputs = (o.proc_mounts, *(c.source for c in (scan.containers if scan else ())))
        return Reading(probe=self.name, subject="summary", kind="summary", output=out, inputs=inputs,
                       probe_source=f"procfs:{o.proc_mounts}")

    async def check_mount(self, entry: MountEntry, table: str | None = None) -> Reading:
        """Check one host mount now (a new remote mount the watch saw in ``table``), as a regular reading."""
        o: MountsOptions = self.options
        t = _Target(f"host:{entry.target}", entry.target, entry, _under(o.rootfs, entry.target), True,
                    table or o.proc_mounts)
        (outcome,) = await self.checker.check_many([(t.key, t.path, True)])
        return self._reading(t, outcome, False)

    async def watch(self, emit: Emit) -> None:
        o: MountsOptions = self.options
        if o.watch.enabled:
            await watch_mounts(emit, o.watch, probe=self.name, check=self.check_mount,
                               wants_check=lambda e: fstype_matches(e.fstype, o.fstypes))

    async def aclose(self) -> None:
        await self.checker.aclose()
