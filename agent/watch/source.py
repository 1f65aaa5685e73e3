"""The watch source: readiness of kernel file descriptors in, readings out.

One :class:`WatchSource` owns one epoll instance. The loop's selector only
asks for readability, while cgroup ``*.events`` files, pressure-trigger fds and
``/proc/PID/mountinfo`` signal with POLLPRI/POLLERR, so they need an epoll of
their own. That epoll is waited on by one thread, blocked in ``epoll_wait``
(no CPU while idle), which hands each batch of ready fds to the loop with
``call_soon_threadsafe``; every handler runs on the loop. Nesting the epoll in
the loop's (``add_reader`` on the epoll fd) would be simpler but loses events:
the outer epoll polls the inner one's ready items to decide readability, and
the poll methods of mountinfo and of pressure triggers consume their event
when polled, so the inner ``epoll_wait`` then finds nothing to report.

Two kinds of registrations:

* **files** (:meth:`WatchSource.watch_file`), registered edge-triggered for
  POLLPRI/POLLERR: every kernel notification counts once, and nothing has to
  be read to re-arm the fd, so a burst can be left unread. Notifications pass
  through a per-key :class:`~agent.watch.coalesce.Throttle`; the ``fire``
  callback (which reads the file and builds readings) runs at most once per
  ``coalesce`` seconds per key and is told how many notifications it stands for;
* **streams** (:meth:`WatchSource.watch_stream`): inotify and netlink sockets,
  one-shot for POLLIN (re-armed once the handler drained them), which may
  in turn route per-item notifications through :meth:`WatchSource.notify`.

Readings go into a bounded buffer that :meth:`WatchSource.run` drains into
the probe's ``emit`` (the pipeline's ``submit``: same stamping, signing and
sinks as polled readings). A full buffer drops its oldest readings and says
so in a reading. Watches (fds and inotify watch descriptors) are budgeted:
past ``max_watches`` a request is refused and one reading says the limit was
reached. Requires the asyncio backend (the agent's).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import stat
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from types import TracebackType
from typing import Any

from ..hostfs.reader import CGROUP2_SUPER_MAGIC, PROC_SUPER_MAGIC, fs_magic
from ..model import Reading
from .coalesce import Throttle
from .options import WatchOptions, WatchStats, ensure_nofile

__all__ = ["CHANGE", "Fire", "WatchOptions", "WatchSource", "WatchStats", "ensure_nofile", "live_stats"]

log = logging.getLogger("hoststamp.watch")

#: the Reading kind of every watch-driven reading (event type ``io.hoststamp.host.v1.<probe>.change``)
CHANGE = "change"

Fire = Callable[[int], Iterable[Reading]]
Emit = Callable[[Reading], Awaitable[object]]

_FILE_MASK = select.EPOLLPRI | select.EPOLLERR | select.EPOLLET
_STREAM_MASK = select.EPOLLIN | select.EPOLLONESHOT
_MAX_EVENTS = 512


_LIVE: weakref.WeakSet[WatchSource] = weakref.WeakSet()


def live_stats() -> list[tuple[str, WatchStats]]:
    """``(probe, stats)`` of every open source, by probe name: for status lines and metrics."""
    return sorted(((s.probe, s.stats) for s in list(_LIVE)), key=lambda x: x[0])


class WatchSource:
    """Kernel notifications of one probe, coalesced and bounded, as readings."""

    def __init__(self, probe: str, *, probe_source: str = "", max_watches: int = 4096, coalesce: float = 0.1,
                 buffer: int = 4096) -> None:
        if max_watches < 1 or buffer < 1:
            raise ValueError("max_watches and buffer must be at least 1")
        self.probe = probe
        self.probe_source = probe_source
        self.max_watches = max_watches
        self.buffer = buffer
        self.stats = WatchStats()
        self._throttle = Throttle(coalesce)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ep: select.epoll | None = None
        self._stop_fd = -1
        self._thread: threading.Thread | None = None
        self._closing = False
        self._streams: set[int] = set()
        self._handlers: dict[int, Callable[[int], None]] = {}
        #: fd -> serial of its registration: an event read before an fd was closed and its number reused
        #: is not handed to the new registration's handler
        self._serials: dict[int, int] = {}
        self._next_serial = 0
        self._file_keys: dict[int, Hashable] = {}
        self._owned: set[int] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._buf: deque[Reading] = deque()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._limited = False
        self._dropped_told = 0

    # lifecycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the epoll instance and start the thread that waits on it for the running loop."""
        if self._ep is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._ep = select.epoll()
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._ep.register(self._stop_fd, select.EPOLLIN)
        self._closing = False
        self._thread = threading.Thread(target=self._wait, name=f"watch-{self.probe}", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _wait(self) -> None:
        """The waiter thread: block in epoll_wait, pass each batch to the loop."""
        ep, loop, stop = self._ep, self._loop, self._stop_fd
        assert ep is not None and loop is not None
        while not self._closing:
            try:
                ready = ep.poll(-1, _MAX_EVENTS)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return
            serials = self._serials
            batch = [(fd, ev, serials.get(fd, -1)) for fd, ev in ready if fd != stop]
            if self._closing:
                return
            if batch:
                try:
                    loop.call_soon_threadsafe(self._dispatch, batch)
                except RuntimeError:  # the loop is closed
                    return

    async def open_or_report(self, emit: Emit, subject: str, what: str) -> bool:
        """:meth:`open`; if that fails (out of fds, threads), one error reading through ``emit`` and ``False``."""
        try:
            self.open()
        except (OSError, RuntimeError) as exc:
            self.close()
            await emit(self.reading(subject, {}, error=f"{what} not started: {exc}"))
            return False
        return True

    def close(self) -> None:
        """Release every fd, timer and task of this source."""
        _LIVE.discard(self)
        if self._thread is not None:
            self._closing = True
            os.eventfd_write(self._stop_fd, 1)
            self._thread.join(timeout=5)
            self._thread = None
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for fd in list(self._owned):
            os.close(fd)
        self._owned.clear()
        self._handlers.clear()
        self._serials.clear()
        self._file_keys.clear()
        self._streams.clear()
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        if self._stop_fd >= 0:
            os.close(self._stop_fd)
            self._stop_fd = -1
        self.stats.watches = 0

    def __enter__(self) -> WatchSource:
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # the watch budget --------------------------------------------------------------------------

    def reserve(self, what: str) -> bool:
        """Take one watch from the budget; ``False`` (and, once, a limit reading) when it is spent."""
        if self.stats.watches >= self.max_watches:
            self.stats.refused += 1
            if not self._limited:
                self._limited = True
                self.push(self.reading(self.probe, {
                    "change": "watch_limit", "max_watches": self.max_watches, "watches": self.stats.watches,
                    "refused": self.stats.refused, "first_refused": what,
                }, error=f"watch limit reached: {self.max_watches} watches in use; {what} and what follows"
                         " it are not watched (polling still covers them)"))
            return False
        self.stats.watches += 1
        self.stats.peak = max(self.stats.peak, self.stats.watches)
        return True

    def release(self, n: int = 1) -> None:
        """Give ``n`` watches back; the limit is reported again after use fell a tenth below it."""
        self.stats.watches = max(0, self.stats.watches - n)
        if self._limited and self.stats.watches <= self.max_watches - max(1, self.max_watches // 10):
            self._limited = False

    # registrations -----------------------------------------------------------------------------

    def _register(self, fd: int, mask: int, handler: Callable[[int], None]) -> None:
        if self._ep is None:
            raise RuntimeError("WatchSource is not open")
        self._next_serial += 1
        self._serials[fd] = self._next_serial
        self._ep.register(fd, mask)
        self._handlers[fd] = handler

    def watch_file(self, key: Hashable, path: str, fire: Fire, *, write: bytes | None = None,
                   first: Callable[[int], None] | None = None) -> int | None:
        """Open ``path`` and fire ``fire(count)`` on its POLLPRI/POLLERR notifications, coalesced per ``key``.

        ``write`` is written once after opening (a pressure trigger); the file
        is then opened read-write. ``first(fd)`` runs before the fd is
        registered: reading the baseline there also acknowledges what the
        kernel flagged before (a kernfs file reports POLLPRI until it is
        read once). Returns the fd, or ``None`` when the watch budget is
        spent. ``OSError`` from opening, writing or ``first`` propagates.
        """
        if not self.reserve(key if isinstance(key, str) else path):
            return None
        try:
            # O_NONBLOCK: a FIFO put where a cgroup file should be would block the event loop's thread in open
            flags = (os.O_RDWR if write is not None else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(path, flags)
        except OSError:
            self.release()
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a kernel file is a regular one; write into no other
                raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device is never watched)", path)
            if write is not None:
                # a trigger goes into the kernel's pressure files only: a root pointed at an ordinary directory
                # (or a link out of cgroupfs) must not make the agent write into whatever file is there
                if fs_magic(fd) not in (CGROUP2_SUPER_MAGIC, PROC_SUPER_MAGIC):
                    raise OSError(errno.EPERM, "not a file of a cgroup2 file system: nothing written", path)
                os.write(fd, write)
            if first is not None:
                first(fd)
            self._register(fd, _FILE_MASK, lambda _ev: self.notify(key, fire))
        except BaseException:
            os.close(fd)
            self.release()
            raise
        self._owned.add(fd)
        self._file_keys[fd] = key
        return fd

    def watch_stream(self, fd: int, on_ready: Callable[[], None], *, owned: bool = False) -> None:
        """Call ``on_ready()`` whenever ``fd`` is readable (it must drain ``fd``). Not counted in the budget."""
        self._register(fd, _STREAM_MASK, lambda _ev: on_ready())
        self._streams.add(fd)
        if owned:
            self._owned.add(fd)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd``; a file watch is closed and returned to the budget, its key forgotten."""
        if fd not in self._handlers:
            return
        del self._handlers[fd]
        self._serials.pop(fd, None)
        self._streams.discard(fd)
        if self._ep is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass
        key = self._file_keys.pop(fd, None)
        if key is not None:
            self.forget(key)
            self.release()
        if fd in self._owned:
            self._owned.discard(fd)
            os.close(fd)

    def notify(self, key: Hashable, fire: Fire) -> None:
        """One notification about ``key``: fire now, or fold it into the firing already scheduled."""
        loop = self._loop
        if loop is None:
            return
        self.stats.notifications += 1
        now = loop.time()
        when = self._throttle.hit(key, now)
        if when is None:
            return
        if when <= now:
            self._fire(key, fire)
        else:
            self._timers[key] = loop.call_at(when, self._fire, key, fire)

    def flush(self, key: Hashable, fire: Fire) -> None:
        """Fire ``key`` now if a firing of it is scheduled (what comes next must not overtake it)."""
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()
            self._fire(key, fire)

    def forget(self, key: Hashable) -> None:
        """Drop the coalescing state of ``key`` and any firing scheduled for it."""
        self._throttle.forget(key)
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, key: Hashable, fire: Fire) -> None:
        self._timers.pop(key, None)
        assert self._loop is not None
        count = self._throttle.due(key, self._loop.time())
        if count == 0:
            return
        self.stats.firings += 1
        try:
            for reading in fire(count):
                self.push(reading)
        except Exception as exc:  # a bad handler or file never ends the source
            log.exception("watch %s: handler failed", key)
            self.push(self.reading(str(key), {}, error=f"watch handler failed: {exc}"))

    def _dispatch(self, ready: list[tuple[int, int, int]]) -> None:
        for fd, ev, serial in ready:
            handler = self._handlers.get(fd)
            if handler is None or self._serials.get(fd) != serial:
                continue
            try:
                handler(ev)
            except Exception as exc:  # one watch's failure is data
                log.exception("watch fd %d: handler failed", fd)
                self.push(self.reading(self.probe, {}, error=f"watch handler failed: {exc}"))
            if fd in self._streams and self._ep is not None:
                self._ep.modify(fd, _STREAM_MASK)  # re-arm the one-shot registration

    # output ------------------------------------------------------------------------------------

    def reading(self, subject: str, output: dict[str, Any], *, inputs: tuple[str, ...] = (),
                error: str | None = None) -> Reading:
        """A ``change`` reading of this source's probe."""
        return Reading(probe=self.probe, subject=subject, output=output, inputs=inputs,
                       probe_source=self.probe_source, kind=CHANGE, error=error)

    def push(self, reading: Reading) -> None:
        """Queue a reading for ``emit``; the oldest is dropped (and counted) when the buffer is full."""
        if len(self._buf) >= self.buffer:
            self._buf.popleft()
            self.stats.dropped += 1
        self._buf.append(reading)
        self._wake.set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` for this source (a follow-up check); cancelled when the source closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, emit: Emit) -> None:
        """Hand queued readings to ``emit`` until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buf:
                await emit(self._buf.popleft())
                self.stats.readings += 1
                if not self._buf and self.stats.dropped > self._dropped_told:
                    lost = self.stats.dropped - self._dropped_told
                    self._dropped_told = self.stats.dropped
                    self._buf.append(self.reading(self.probe, {"change": "dropped", "dropped": lost},
                                                  error=f"{lost} change readings dropped: the pipeline was slower"
                                                        f" than the kernel's notifications (buffer={self.buffer})"))
