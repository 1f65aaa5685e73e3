"""The exit stream: the kernel's accounting record of every task that ends.

A socket that registers a cpumask (``TASKSTATS_CMD_ATTR_REGISTER_CPUMASK``)
receives, for each task exiting on those CPUs, a ``TASKSTATS_CMD_NEW`` with the
task's ``struct taskstats`` (and its thread group's totals when the group ends
with it). Records wait in a bounded buffer: when the consumer falls behind,
the oldest are dropped and counted; when the kernel could not queue a record
(``ENOBUFS`` on the socket) that is counted too. Either loss is reported once
per episode as an :class:`Overrun` item, never silently: an episode ends when
the consumer has caught up (the buffer is empty), or, while losses go on, every
``report_every`` seconds, so that a sustained burst is one report a second
rather than one each time the buffer fills again. :meth:`ExitStream.stop`
deregisters the mask before closing the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass

from ..errors import ParseError, ProbeError
from ..hostfs.reader import read_small
from .client import resolve_family
from .codec import Message
from .nlsocket import NETLINK_GENERIC, NetlinkSocket
from .structs import TaskStats
from .taskstats import build_deregister, build_register, parse_taskstats

log = logging.getLogger("hoststamp.taskstats")

__all__ = ["REPORT_EVERY", "ExitRecord", "ExitStream", "Overrun", "possible_cpus"]

#: seconds between reports of losses while they go on (the consumer never catching up)
REPORT_EVERY = 1.0


#: a cpulist as the kernel writes it: ranges and single CPUs, comma-separated
_CPULIST = re.compile(r"\d{1,5}(?:-\d{1,5})?(?:,\d{1,5}(?:-\d{1,5})?)*")


def possible_cpus(path: str | os.PathLike[str] = "/sys/devices/system/cpu/possible") -> str:
    """The cpulist of possible CPUs (``0-3``), the mask the kernel accepts; ``0-(n-1)`` if unreadable, or not a
    cpulist (a regular file only: a FIFO there would block the start)."""
    why = "not a cpulist"
    try:
        text = read_small(str(path), 4096).decode("ascii", "replace").strip()
    except OSError as exc:
        text, why = "", exc.strerror or str(exc)
    if _CPULIST.fullmatch(text):
        return text
    guess = f"0-{max(1, os.cpu_count() or 1) - 1}"
    log.warning("cpu_possible %s: %s; the exit stream registers CPUs %s instead", path, why, guess)
    return guess


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """One exited task: its pid and accounting; ``group`` when its thread group ended with it."""

    pid: int
    stats: TaskStats
    tgid: int | None = None
    group: TaskStats | None = None


@dataclass(frozen=True, slots=True)
class Overrun:
    """Records were lost since the previous report: totals so far of both kinds of loss."""

    kernel_overruns: int
    dropped: int


class ExitStream:
    """Exit notifications as an async iterator of :class:`ExitRecord` (and :class:`Overrun`) items.

    ``async with ExitStream() as s: async for item in s: ...``
    """

    def __init__(self, *, cpumask: str | None = None, buffer: int = 4096, rcvbuf: int = 8 << 20,
                 cpu_possible: str | os.PathLike[str] = "/sys/devices/system/cpu/possible",
                 report_every: float = REPORT_EVERY) -> None:
        if buffer < 1:
            raise ValueError("buffer must hold at least one record")
        self.cpumask = cpumask or possible_cpus(cpu_possible)
        self.buffer: deque[ExitRecord] = deque()
        self.limit = buffer
        self._rcvbuf = rcvbuf
        self.sock: NetlinkSocket | None = None
        self._family = 0
        self._ready = asyncio.Event()
        self._unreported = False
        #: when the losses not reported yet began (time.monotonic()), and how often a report may come while
        #: they go on
        self._lost_since = 0.0
        self.report_every = report_every
        #: when the last report was given (time.monotonic()): the next one comes ``report_every`` after it at
        #: the soonest, so that losses going on, with the buffer caught up between them, are one report a second
        self._reported_at = -math.inf
        #: records received, dropped from the buffer, and undecodable messages
        self.received = 0
        self.dropped = 0
        self.malformed = 0
        #: ENOBUFS seen on the socket: the kernel had records it could not queue
        self.overruns = 0

    async def start(self) -> None:
        """Open the socket and register the cpumask; raises :class:`NetlinkError` (EPERM without CAP_NET_ADMIN)."""
        sock = NetlinkSocket(NETLINK_GENERIC, rcvbuf=self._rcvbuf, unsolicited=self._on_message,
                             on_overrun=self._on_overrun)
        try:
            self._family = (await resolve_family(sock)).id
            await sock.request(build_register(self._family, 0, self.cpumask), ack_only=True)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    async def stop(self, timeout: float = 1.0) -> None:
        """Deregister (waiting at most ``timeout`` for the ack) and close. Safe to call twice.

        The deregistration is sent before the first suspension, so it reaches
        the kernel even when the caller is being cancelled.
        """
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await sock.request(build_deregister(self._family, 0, self.cpumask), ack_only=True)
        except (ProbeError, TimeoutError):
            pass  # the kernel also drops a listener whose socket is gone
        finally:
            sock.close()
            self._ready.set()

    async def __aenter__(self) -> ExitStream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __aiter__(self) -> ExitStream:
        return self

    async def __anext__(self) -> ExitRecord | Overrun:
        item = await self.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def get(self) -> ExitRecord | Overrun | None:
        """The next item, waiting for one; ``None`` once stopped and drained.

        Losses are reported once caught up with what was queued (or ``report_every`` after they began, if the
        buffer never empties), and never sooner than ``report_every`` after the previous report: a report due
        earlier waits, the records queued meanwhile are handed out first, and losses met meanwhile join it."""
        while True:
            due: float | None = None
            if self._unreported:
                now = time.monotonic()
                if not self.buffer or now - self._lost_since >= self.report_every or self.sock is None:
                    due = self._reported_at + self.report_every - now
                    if due <= 0 or (self.sock is None and not self.buffer):
                        return self._report(now)
            if self.buffer:
                return self.buffer.popleft()
            if self.sock is None:
                return None
            self._ready.clear()
            if due is None:
                await self._ready.wait()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due):
                    await self._ready.wait()

    def _report(self, now: float) -> Overrun:
        self._unreported = False
        self._reported_at = now
        return Overrun(kernel_overruns=self.overruns, dropped=self.dropped)

    def _on_overrun(self) -> None:
        self.overruns += 1
        self._lost()
        self._ready.set()

    def _lost(self) -> None:
        if not self._unreported:
            self._unreported = True
            self._lost_since = time.monotonic()

    def _on_message(self, msg: Message) -> None:
        if msg.type != self._family:
            return
        try:
            aggregates = parse_taskstats(msg)
        except ParseError:
            self.malformed += 1
            return
        pid = tgid = None
        stats = group = None
        for kind, ident, st in aggregates:
            if kind == "pid":
                pid, stats = ident, st
            else:
                tgid, group = ident, st
        if pid is None or stats is None:
            self.malformed += 1
            return
        self.received += 1
        if len(self.buffer) >= self.limit:
            self.buffer.popleft()
            self.dropped += 1
            self._lost()
        self.buffer.append(ExitRecord(pid=pid, stats=stats, tgid=tgid, group=group))
        self._ready.set()
