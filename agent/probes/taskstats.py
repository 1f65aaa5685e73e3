"""``taskstats``: per-task accounting from the kernel, cgroupstats, and the process-exit stream.

:meth:`TaskstatsProbe.collect` queries ``TASKSTATS_CMD_GET`` for every process
(or the processes of the configured ``pids``, ``cgroups`` and ``commands``),
one reading per pid with the decoded ``struct taskstats`` as output; a pid that
ended meanwhile (ESRCH) is skipped. Configured ``cgroupstats`` directories
(cgroup v1) add one ``taskstats.cgroupstats`` reading each. :meth:`watch`
streams the accounting of every exiting task as ``taskstats.exit`` readings.

Queries and the exit stream need CAP_NET_ADMIN; without it a round yields one
"unavailable: needs CAP_NET_ADMIN" reading instead of one error per pid.
cgroupstats needs no privilege. Fields, units and versions: ``docs/taskstats.md``.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio

from ..errors import ProbeError
from ..hostfs.reader import read_small
from ..model import Reading
from ..netlink import (
    CgroupV2Unsupported,
    ExitRecord,
    ExitStream,
    NetlinkError,
    Overrun,
    TaskStats,
    TaskstatsClient,
    has_net_admin,
    resolve_family_sync,
)
from .base import Emit, Probe, ProbeContext
from .registry import register

__all__ = [
    "NEEDS_CAP",
    "TaskstatsOptions",
    "TaskstatsProbe",
    "exit_output",
    "select_pids",
    "taskstats_output",
]

NEEDS_CAP = "unavailable: needs CAP_NET_ADMIN"
INPUT = "genetlink:TASKSTATS"
MAX_SAFE_INT = 2**53 - 1


@dataclass(frozen=True, slots=True)
class TaskstatsOptions:
    """``[probes.taskstats]`` keys. With no ``pids``, ``cgroups`` or ``commands``, every process is read."""

    #: process ids to read
    pids: tuple[int, ...] = ()
    #: cgroup directories whose ``cgroup.procs`` name processes to read (v1 or v2)
    cgroups: tuple[str, ...] = ()
    #: command names (as in ``/proc/PID/comm``) of processes to read; also filters the exit stream
    commands: tuple[str, ...] = ()
    #: query each process by pid (its main thread) or by tgid (the kernel's thread-group sum)
    by: Literal["pid", "tgid"] = "pid"
    #: stream the accounting of exiting tasks (``taskstats.exit`` events)
    exits: bool = True
    #: also stream exits of threads that are not a thread-group leader
    exit_threads: bool = False
    #: exit records held while the pipeline is busy; the oldest are dropped (and reported) beyond it
    exit_buffer: int = 4096
    #: cgroup v1 directories to read with CGROUPSTATS_CMD_GET
    cgroupstats: tuple[str, ...] = ()
    #: the procfs to list processes from
    proc: str = "/proc"
    #: the cpulist file of possible CPUs, the exit stream's cpumask
    cpu_possible: str = "/sys/devices/system/cpu/possible"
    #: queries in flight at once
    window: int = 128

    def __post_init__(self) -> None:
        for name in ("proc", "cpu_possible"):
            if not getattr(self, name) or "\0" in getattr(self, name):
                raise ValueError(f"{name} must be a path (not empty, no NUL character)")
        for name in ("cgroups", "cgroupstats"):
            if any(not p or "\0" in p for p in getattr(self, name)):
                raise ValueError(f"{name} must hold paths (none empty, no NUL character)")
            if any(not p.startswith("/") for p in getattr(self, name)):
                raise ValueError(f"{name} must hold absolute paths (a directory under a cgroup mount)")
        if any(not c or "\0" in c or len(c.encode()) > _COMM_MAX for c in self.commands):
            raise ValueError(f"commands must hold command names as /proc/PID/comm shows them (not empty, no NUL "
                             f"character, at most {_COMM_MAX} bytes: the kernel keeps no more)")
        if not 1 <= self.exit_buffer <= _EXIT_BUFFER_MAX:
            raise ValueError(f"exit_buffer must be between 1 and {_EXIT_BUFFER_MAX}")
        if not 1 <= self.window <= 4096:
            raise ValueError("window must be between 1 and 4096")
        bad = [p for p in self.pids if not 1 <= p <= _PID_MAX]
        if bad:
            raise ValueError(f"pids must be process ids between 1 and {_PID_MAX}, got {bad[0]}")


#: the largest process id Linux can give (PID_MAX_LIMIT, 2^22 on 64-bit kernels)
_PID_MAX = 1 << 22
#: the longest name /proc/PID/comm shows (TASK_COMM_LEN 16, less its NUL)
_COMM_MAX = 15
#: exit records held at most (each is a few hundred bytes: a million is a few hundred MB already)
_EXIT_BUFFER_MAX = 1 << 20


def _json_int(v: int | str) -> int | str:
    """Integers beyond JSON's exact range travel as decimal strings (the event contract)."""
    return str(v) if isinstance(v, int) and v > MAX_SAFE_INT else v


def taskstats_output(stats: TaskStats) -> dict[str, Any]:
    """The ``output`` of one reading: every decoded member by its kernel name (pure)."""
    out: dict[str, Any] = {k: _json_int(v) for k, v in stats.fields.items()}
    if stats.note:
        out["decoder_note"] = stats.note
    return out


def exit_output(rec: ExitRecord) -> dict[str, Any]:
    """The ``output`` of one exit reading: the task's members, the exit status split, the group's totals."""
    out = taskstats_output(rec.stats)
    status = rec.stats.get("ac_exitcode")
    if isinstance(status, int):
        out["exit_signal"] = status & 0x7F
        out["exit_code"] = (status >> 8) & 0xFF
    if rec.group is not None:
        out["group"] = {"tgid": rec.tgid, **taskstats_output(rec.group)}
    return out


def _pid(word: str) -> int | None:
    """A pid as /proc and cgroup.procs write it, or None for anything else (a name above :data:`_PID_MAX` would
    not even fit the netlink request)."""
    if word.isascii() and word.isdigit() and len(word) <= 10 and 0 < (pid := int(word)) <= _PID_MAX:
        return pid
    return None


def _read_words(path: Path) -> list[str] | str:
    """The words of a small file, or why it could not be read."""
    try:
        return read_small(str(path)).decode("utf-8", "replace").split()
    except OSError as exc:
        return exc.strerror or str(exc)


def select_pids(options: TaskstatsOptions) -> tuple[list[int], list[str]]:
    """The pids a round reads, sorted (every process, or those the options name), and what could not be read."""
    proc = Path(options.proc)
    try:
        listed = [pid for n in os.listdir(proc) if (pid := _pid(n)) is not None]
    except OSError as exc:
        raise ProbeError(f"{proc}: {exc.strerror or exc}") from None
    if not (options.pids or options.cgroups or options.commands):
        return sorted(listed), []
    chosen: set[int] = set(options.pids)
    problems: list[str] = []
    for d in options.cgroups:
        procs = _read_words(Path(d) / "cgroup.procs")
        if isinstance(procs, str):
            problems.append(f"cannot read {Path(d) / 'cgroup.procs'}: {procs}")
            continue
        chosen.update(pid for x in procs if (pid := _pid(x)) is not None)
    if options.commands:
        wanted = set(options.commands)
        for pid in listed:
            comm = _read_words(proc / str(pid) / "comm")  # a reason: the process just ended
            if isinstance(comm, list) and " ".join(comm) in wanted:
                chosen.add(pid)
    return sorted(chosen), problems


@register
class TaskstatsProbe(Probe):
    name: ClassVar[str] = "taskstats"
    Options: ClassVar[type[Any]] = TaskstatsOptions
    default_interval: ClassVar[float] = 30.0

    def __init__(self, options: TaskstatsOptions, ctx: ProbeContext | None = None) -> None:
        super().__init__(options, ctx or ProbeContext())
        self._client: TaskstatsClient | None = None
        #: the exit stream, and whether it went on to the probe of a reloaded configuration
        self._exits: ExitStream | None = None
        self._exits_handed = False
        #: why the exit stream this probe opens follows a gap (a reload that changed its options), if it does
        self._restarted: str | None = None

    def carry_over(self, before: Probe) -> None:
        """A reload: the open exit stream goes on to this probe, so that the exits of the moment between the
        two watches are queued for it. A new stream would miss them, and nothing would tell: the kernel drops
        records only for a listener it has, and says so then."""
        super().carry_over(before)
        if not isinstance(before, TaskstatsProbe) or before._exits is None or before._exits.sock is None:
            return
        o, b = self.options, before.options  # the stream's own options; the rest applies to what it reads
        if o.exits and (o.exit_buffer, o.cpu_possible) == (b.exit_buffer, b.cpu_possible):
            self._exits, before._exits_handed = before._exits, True
        elif o.exits:  # a stream of its own, opened after the one before closes: the exits between go unseen
            changed = "exit_buffer" if o.exit_buffer != b.exit_buffer else "cpu_possible"
            self._restarted = (f"exit stream opened again ({changed} changed at a reload): exits between the two "
                               "streams are not seen")

    @classmethod
    def unavailable(cls, options: Any) -> str | None:
        if not has_net_admin() and not options.cgroupstats:
            return NEEDS_CAP
        try:
            resolve_family_sync()
        except ProbeError as exc:
            return f"no TASKSTATS generic netlink family (kernel without CONFIG_TASKSTATS?): {exc}"
        return None

    def _reading(self, subject: str, output: Mapping[str, Any], *, kind: str = "", error: str | None = None,
                 inputs: tuple[str, ...] = (INPUT,), now: float | None = None) -> Reading:
        return Reading(probe=self.name, subject=subject, output=output, inputs=inputs, probe_source=INPUT,
                       kind=kind, error=error, time=time.time() if now is None else now)

    def _get_client(self) -> TaskstatsClient:
        if self._client is None or self._client.sock.closed:
            self._client = TaskstatsClient(window=self.options.window)
        return self._client

    def provenance(self) -> tuple[str, tuple[str, ...]]:
        # a failed round still says what it read: the netlink family, and the /proc it selects tasks in
        return INPUT, (INPUT, self.options.proc)

    async def collect(self) -> Sequence[Reading]:
        o: TaskstatsOptions = self.options
        readings: list[Reading] = []
        if has_net_admin():
            readings += await self._tasks(o)
        else:
            readings.append(self._reading(self.name, {}, error=NEEDS_CAP))
        for d in o.cgroupstats:
            readings.append(await self._cgroupstats(d))
        return readings

    async def _tasks(self, o: TaskstatsOptions) -> list[Reading]:
        pids, problems = await anyio.to_thread.run_sync(select_pids, o)
        results = await self._get_client().get_many(pids, tgid=o.by == "tgid")
        now = time.time()
        readings = [self._reading(self.name, {}, error=p, now=now) for p in problems]
        failed: dict[int, int] = {}
        ok = 0
        for pid, res in zip(pids, results, strict=True):
            if isinstance(res, TaskStats):
                ok += 1
                readings.append(self._reading(str(pid), taskstats_output(res), now=now))
            elif isinstance(res, NetlinkError) and res.errno == errno.ESRCH:
                continue  # ended between listing and query
            else:
                code = res.errno if isinstance(res, NetlinkError) else 0
                failed[code] = failed.get(code, 0) + 1
        if failed.get(errno.EPERM) and not ok:  # e.g. capabilities of a user namespace: the kernel wants init's
            return [*readings[:len(problems)], self._reading(self.name, {}, error=NEEDS_CAP, now=now)]
        if failed:
            text = ", ".join(f"{errno.errorcode.get(c, str(c)) if c else 'undecodable reply'} x{n}"
                             for c, n in sorted(failed.items()))
            readings.append(self._reading(self.name, {}, now=now,
                                          error=f"{sum(failed.values())} of {len(pids)} pids failed: {text}"))
        return readings

    async def _cgroupstats(self, path: str) -> Reading:
        inputs = (INPUT, path)
        try:
            counts = await self._get_client().cgroupstats(path)
        except CgroupV2Unsupported:
            return self._reading(path, {}, kind="cgroupstats", inputs=inputs,
                                 error="unsupported on cgroup v2: cgroupstats reads cgroup v1 directories only")
        except ProbeError as exc:
            return self._reading(path, {}, kind="cgroupstats", inputs=inputs, error=str(exc))
        return self._reading(path, counts.as_dict(), kind="cgroupstats", inputs=inputs)

    async def watch(self, emit: Emit) -> None:
        o: TaskstatsOptions = self.options
        if not o.exits:
            return
        if not has_net_admin():
            await emit(self._reading(self.name, {}, kind="exit", error=NEEDS_CAP))
            return
        stream = self._exits
        if stream is None or stream.sock is None:  # else taken over from the probe a reload replaced
            stream = self._exits = ExitStream(buffer=o.exit_buffer, cpu_possible=o.cpu_possible)
            try:
                await stream.start()
            except ProbeError as exc:
                eperm = isinstance(exc, NetlinkError) and exc.errno == errno.EPERM
                await emit(self._reading(self.name, {}, kind="exit", error=NEEDS_CAP if eperm else str(exc)))
                return
            if self._restarted is not None:
                await emit(self._reading(self.name, {"change": "restarted"}, kind="exit", error=self._restarted))
        try:
            while (item := await stream.get()) is not None:
                for reading in self._exit_readings(item, o):
                    await emit(reading)
        finally:
            if not self._exits_handed:
                with anyio.CancelScope(shield=True):  # deregister even when cancelled; bounded by stop()'s timeout
                    await stream.stop()

    def _exit_readings(self, item: ExitRecord | Overrun, o: TaskstatsOptions) -> Iterable[Reading]:
        if isinstance(item, Overrun):
            yield self._reading(self.name, {"kernel_overruns": item.kernel_overruns, "dropped": item.dropped},
                                kind="exit", error="exit records lost: the kernel's socket queue overran"
                                f" {item.kernel_overruns} times, {item.dropped} dropped from a full buffer")
            return
        subject = item.pid
        if not o.exit_threads and (tgid := item.stats.get("ac_tgid")) not in (None, 0, item.pid):
            # a thread's exit: left out, unless the group ended with it (its main thread ended first). Then it
            # carries what only the process's last exit knows: the group's totals, and the status of an exit
            # that ended the whole group. It is the process's exit, under the process's id
            if item.group is None or not isinstance(tgid, int):
                return
            subject = tgid
        if o.commands and item.stats.get("ac_comm") not in o.commands:
            return
        yield self._reading(str(subject), exit_output(item), kind="exit")

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._exits is not None and not self._exits_handed:  # taken over, and never watched
            await self._exits.stop()
