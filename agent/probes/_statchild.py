"""Deadline-bounded ``stat``/``statvfs`` of mount points, in child processes.

A hung remote mount (an NFS hard mount whose server is gone, a FUSE daemon that
never answers) leaves ``stat`` in uninterruptible sleep that even SIGKILL does
not end. So the agent never touches a mount itself: :class:`StatChecker` keeps
a small pool of worker processes (``_statworker.py``, started with
``python -I -S``), sends each a path and waits for the answer with a deadline
on the event loop. It never waits on a child past that deadline:

* a worker that misses it is sent SIGKILL (it dies when the kernel lets it) and
  kept in the *stuck* set under the key of the mount it was checking;
* while a mount's worker is stuck, checks of that mount return at once with
  the old block time and start no second child;
* every child that is let go is reaped when it ends: a pidfd registered with
  the event loop wakes us, and :meth:`StatChecker.sweep` polls as a fallback.

Nothing here blocks the event loop: pipes are non-blocking and read by loop
callbacks; starting a worker is one ``fork``/``exec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WORKER_SCRIPT", "StatChecker", "StatOutcome"]

#: the worker program (run as a script, never imported)
WORKER_SCRIPT = str(Path(__file__).with_name("_statworker.py"))
_READ = 1 << 16
#: seconds a new worker may take to start (to say it is ready) before its check fails; not part of ``timeout``
START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class StatOutcome:
    """What one check found out.

    ``timed_out`` means no answer came within the deadline, now or in an
    earlier check whose child is still blocked (``blocked_since`` is then the
    wall-clock start of that first check). ``stats`` is the worker's answer
    after both calls returned; ``errno``/``error``/``op`` describe a failure.
    """

    path: str
    started: float
    elapsed: float
    timed_out: bool = False
    blocked_since: float | None = None
    pid: int | None = None
    errno: int | None = None
    error: str | None = None
    op: str | None = None
    stats: Mapping[str, int] | None = None


class _WorkerGone(Exception):
    pass


class _Worker:
    __slots__ = ("fd_in", "fd_out", "idle_since", "loop", "pidfd", "proc", "ready")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.fd_in = proc.stdin.fileno()
        self.fd_out = proc.stdout.fileno()
        os.set_blocking(self.fd_out, False)
        self.pidfd: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.idle_since = time.monotonic()
        #: the worker said it started (its first line)
        self.ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


@dataclass(frozen=True, slots=True)
class _Stuck:
    worker: _Worker
    since: float


class StatChecker:
    """Checks mount points in worker processes, each with a deadline of ``timeout`` seconds."""

    def __init__(self, timeout: float, *, max_workers: int = 8, idle_ttl: float = 120.0,
                 python: str = sys.executable, script: str = WORKER_SCRIPT) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        self.timeout = timeout
        self.max_workers = max(1, max_workers)
        self.idle_ttl = idle_ttl
        self._argv = [python, "-I", "-S", script]
        self._idle: list[_Worker] = []
        self._stuck: dict[str, _Stuck] = {}
        self._ending: dict[int, _Worker] = {}
        #: workers started so far
        self.spawned = 0
        #: let-go children reaped so far
        self.reaped = 0

    # -- what tests and the probe's summary look at ------------------------------------------------

    @property
    def stuck(self) -> dict[str, int]:
        """Mount key -> pid of the child still blocked on that mount."""
        return {key: s.worker.pid for key, s in self._stuck.items()}

    @property
    def pending_exit(self) -> int:
        """Children let go (stuck or retired) that have not been reaped yet."""
        return len(self._ending)

    @property
    def idle(self) -> int:
        return len(self._idle)

    # -- checking --------------------------------------------------------------------------------

    async def check(self, key: str, path: str) -> StatOutcome:
        """``stat`` then ``statvfs`` of ``path`` in a worker; never longer than ``timeout``, plus a new worker's
        start-up (at most :data:`START_TIMEOUT`), which is not counted against it."""
        self.sweep()
        wall = time.time()
        stuck = self._stuck.get(key)
        if stuck is not None:
            return StatOutcome(
                path=path, started=wall, elapsed=0.0, timed_out=True, blocked_since=stuck.since,
                pid=stuck.worker.pid,
                error=f"an earlier check (pid {stuck.worker.pid}) has been blocked for {wall - stuck.since:.1f} s",
            )
        loop = asyncio.get_running_loop()
        try:
            worker = self._take()
        except OSError as exc:
            return StatOutcome(path=path, started=wall, elapsed=0.0, error=f"cannot start a checker: {exc}")
        if not worker.ready:  # a new one: its start-up is not the mount's time
            try:
                await self._started(loop, worker)
            except (TimeoutError, _WorkerGone) as exc:
                self._let_go(worker, loop, kill=True)
                why = f"did not start within {START_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else str(exc)
                return StatOutcome(path=path, started=wall, elapsed=0.0, pid=worker.pid,
                                   error=f"checker failed: {why}")
            except asyncio.CancelledError:
                self._let_go(worker, loop, kill=True)
                raise
            wall = time.time()
        t0 = time.monotonic()
        try:
            line = await self._ask(loop, worker, path)
        except TimeoutError:
            self._abandon(key, worker, wall, loop)
            return StatOutcome(
                path=path, started=wall, elapsed=time.monotonic() - t0, timed_out=True, blocked_since=wall,
                pid=worker.pid, error=f"stat did not return within {self.timeout:g} s",
            )
        except asyncio.CancelledError:
            self._abandon(key, worker, wall, loop)
            raise
        except _WorkerGone as exc:
            self._let_go(worker, loop, kill=True)
            return StatOutcome(path=path, started=wall, elapsed=time.monotonic() - t0, pid=worker.pid,
                               error=f"checker failed: {exc}")
        elapsed = time.monotonic() - t0
        worker.idle_since = time.monotonic()
        self._idle.append(worker)
        return _outcome(path, wall, elapsed, worker.pid, line)

    async def check_many(self, items: Sequence[tuple[str, str, bool]]) -> list[StatOutcome]:
        """Check ``(key, path, own_lane)`` triples; the answers come in the same order.

        Checks with ``own_lane`` (remote mounts, which may hang) run side by side, at most
        ``max_workers`` at a time; the others (local file systems) share one worker, one after
        the other, so that a round of many quick checks starts one child, not many.
        """
        wide, narrow = asyncio.Semaphore(self.max_workers), asyncio.Semaphore(1)

        async def one(key: str, path: str, own_lane: bool) -> StatOutcome:
            if key in self._stuck:  # answered at once, takes no slot
                return await self.check(key, path)
            async with wide if own_lane else narrow:
                return await self.check(key, path)

        return list(await asyncio.gather(*(one(k, p, lane) for k, p, lane in items)))

    async def _started(self, loop: asyncio.AbstractEventLoop, worker: _Worker) -> None:
        """Wait for a new worker's ready line."""
        line = await self._line(loop, worker, None, START_TIMEOUT)
        if line != b'{"ready": true}':
            raise _WorkerGone(f"unexpected first line {line[:80]!r}")
        worker.ready = True

    async def _ask(self, loop: asyncio.AbstractEventLoop, worker: _Worker, path: str) -> bytes:
        return await self._line(loop, worker, json.dumps(path).encode() + b"\n", self.timeout)

    async def _line(self, loop: asyncio.AbstractEventLoop, worker: _Worker, request: bytes | None,
                    timeout: float) -> bytes:
        """Send ``request`` (if any) and wait up to ``timeout`` for the worker's next line."""
        fut: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(worker.fd_out, self._on_readable, worker, bytearray(), fut)
        try:
            if request is not None:
                try:
                    os.write(worker.fd_in, request)
                except OSError as exc:
                    raise _WorkerGone(f"request not delivered: {exc.strerror or exc}") from None
            return await asyncio.wait_for(fut, timeout)
        finally:
            loop.remove_reader(worker.fd_out)

    @staticmethod
    def _on_readable(worker: _Worker, buf: bytearray, fut: asyncio.Future[bytes]) -> None:
        if fut.done():
            return
        try:
            data = os.read(worker.fd_out, _READ)
        except BlockingIOError:
            return
        except OSError as exc:
            fut.set_exception(_WorkerGone(exc.strerror or str(exc)))
            return
        if not data:
            fut.set_exception(_WorkerGone("worker exited"))
            return
        buf += data
        line, nl, _rest = buf.partition(b"\n")
        if nl:
            fut.set_result(bytes(line))

    # -- the pool --------------------------------------------------------------------------------

    def _take(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.proc.poll() is None:
                return worker
            worker.close_pipes()
        proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True, cwd="/", env={},
        )
        self.spawned += 1
        return _Worker(proc)

    def _abandon(self, key: str, worker: _Worker, since: float, loop: asyncio.AbstractEventLoop) -> None:
        self._stuck[key] = _Stuck(worker, since)
        self._let_go(worker, loop, kill=True)

    def _let_go(self, worker: _Worker, loop: asyncio.AbstractEventLoop | None, *, kill: bool) -> None:
        """Stop using ``worker``; it is reaped whenever it ends, never waited for."""
        if worker.pid in self._ending:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        worker.close_pipes()
        self._ending[worker.pid] = worker
        if loop is not None and not loop.is_closed():
            try:
                worker.pidfd = os.pidfd_open(worker.pid)
                loop.add_reader(worker.pidfd, self._reap, worker)
                worker.loop = loop
            except (AttributeError, OSError):  # no pidfd here, or already gone: sweep() reaps
                self._close_pidfd(worker)
        self._reap(worker)

    def _reap(self, worker: _Worker) -> bool:
        if worker.proc.poll() is None:
            return False
        self._close_pidfd(worker)
        if self._ending.pop(worker.pid, None) is not None:
            self.reaped += 1
        for key in [k for k, s in self._stuck.items() if s.worker is worker]:
            del self._stuck[key]
        return True

    @staticmethod
    def _close_pidfd(worker: _Worker) -> None:
        if worker.pidfd is None:
            return
        if worker.loop is not None and not worker.loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                worker.loop.remove_reader(worker.pidfd)
        with contextlib.suppress(OSError):
            os.close(worker.pidfd)
        worker.pidfd = None
        worker.loop = None

    def sweep(self) -> int:
        """Reap every let-go child that has ended; retire workers idle past ``idle_ttl``. Returns reaps."""
        done = sum(1 for w in list(self._ending.values()) if self._reap(w))
        now = time.monotonic()
        keep = [w for w in self._idle if now - w.idle_since < self.idle_ttl]
        if not keep and self._idle:
            keep = [max(self._idle, key=lambda w: w.idle_since)]
        for worker in self._idle:
            if worker not in keep:
                self._let_go(worker, _running_loop(), kill=False)
        self._idle = keep
        return done

    async def aclose(self, grace: float = 0.5) -> None:
        """End idle workers (end of input) and wait at most ``grace`` s for them; stuck ones are not waited for."""
        loop = _running_loop()
        idle, self._idle = self._idle, []
        for worker in idle:
            self._let_go(worker, loop, kill=False)
        deadline = time.monotonic() + grace
        while any(w.proc.poll() is None for w in idle) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.sweep()
        for worker in list(self._ending.values()):
            self._close_pidfd(worker)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _outcome(path: str, started: float, elapsed: float, pid: int, line: bytes) -> StatOutcome:
    try:
        reply: Any = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return StatOutcome(path=path, started=started, elapsed=elapsed, pid=pid,
                           error="checker failed: unreadable answer")
    if "error" in reply:
        return StatOutcome(path=path, started=started, elapsed=elapsed, pid=pid,
                           errno=int(reply.get("errno") or 0) or None, error=str(reply["error"]),
                           op=str(reply.get("op") or "") or None)
    stats = {k: int(v) for k, v in reply.items() if isinstance(v, int) and not isinstance(v, bool)}
    return StatOutcome(path=path, started=started, elapsed=elapsed, pid=pid, stats=stats)
