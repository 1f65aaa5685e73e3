"""A sink's disk spool: a write-ahead log of signed events in segment files, trimmed once delivered.

Layout of a spool directory::

    00000000000000000001.wal   segments, named by the first record index they may hold
    00000000000000004097.wal   (records: see :mod:`.wal`)
    cursor                     u64 index of the last delivered record + CRC-32 (rewritten in place)
    head                       where the newest segment starts, its last record (:mod:`.spoolhead`)
    lock                       flock'ed while an agent uses the directory
    quarantine/                damaged segments, moved aside on start

On start the spool salvages what it can and never refuses to start because of
damage (:mod:`.salvage`); :attr:`Spool.report` says what happened. Records at or below the cursor were delivered and are
skipped. A new segment is started on every start, and when the one being
written reaches ``segment_bytes``; a segment is deleted once every record in it
is delivered (or evicted by ``drop_oldest``): trimming is :mod:`.spooltrim`.

Reading records back, and what the reader does with a segment removed, cut
short or unreadable while running, is :mod:`.spoolread`: in short, damage is
counted in :attr:`Spool.lost` and skipped, an error that may pass (``EIO``) is a
:class:`~agent.errors.SinkError` the caller retries. A cursor that cannot be
written is a :class:`~agent.errors.SinkError` too, raised before the spool trims
anything, and the next :meth:`Spool.commit` writes it again.

fsync policy (``spool_fsync``): ``always`` and ``batch`` make :meth:`Spool.sync`
flush segments, the cursor and new directory entries to disk; ``never`` leaves
that to the kernel (what was written survives the agent being killed, not the
host losing power). Who waits for a sync is the queue's business
(:mod:`.spoolqueue`). This module is synchronous file I/O and owns the format.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from ..errors import SinkError
from ..model import Event
from . import wal
from .salvage import (
    SalvageReport,
    Segment,
    close_gap,
    decode_cursor,
    fsync_dir,
    not_a_file,
    salvage,
    set_aside,
)
from .spoolhead import HEAD_FILE, Head, missing_newest
from .spooltrim import SpoolTrim

__all__ = ["FsyncPolicy", "SalvageReport", "Spool"]

log = logging.getLogger("hoststamp.spool")

FsyncPolicy = Literal["always", "batch", "never"]


class Spool(SpoolTrim):
    """One spool directory. Not thread-safe, except that :meth:`sync_begin`'s job may run in a thread."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 256 << 20,
                 fsync: FsyncPolicy = "batch", segment_bytes: int | None = None) -> None:
        if max_bytes < 4096:
            raise ValueError("spool max_bytes must be at least 4096")
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.fsync: FsyncPolicy = fsync
        self.segment_bytes = segment_bytes or max(4096, min(16 << 20, max_bytes // 16))
        self.dir.mkdir(parents=True, exist_ok=True)
        #: the spool's own entries that were not files (moved aside): (problem, where to)
        self._set_apart = [(f"{name}: not a file (a {kind}); moved aside", set_aside(self.dir / name))
                           for name in ("lock", "cursor", HEAD_FILE)
                           if (kind := not_a_file(self.dir / name)) is not None]
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SinkError(f"spool {self.dir}: in use by another process") from None
        self._segments: deque[Segment] = deque()
        #: old tail fds, closed once fsynced (see :meth:`sync_begin`)
        self._retired: list[int] = []
        self._users: dict[int, int] = {}
        self._refs = 0
        self._tail_fd = -1
        self._read_fd = -1
        self._read_seg: Segment | None = None
        self._read_off = 0
        self._cursor_dirty = False
        #: a segment was created since the last sync: the directory needs one too
        self._dir_dirty = False
        self.bytes = 0
        #: records written and not yet handed to the reader
        self.unread = 0
        #: index of the last record handed out by :meth:`read`
        self.last_read = 0
        #: records handed out and not yet committed, and the read batches they came in: (first, last index, count)
        self.outstanding = 0
        self._handed: deque[tuple[int, int, int]] = deque()
        #: a rewind could not read again what was not confirmed: the cursor stays until the next start
        self.hold_cursor = False
        #: the start-up salvage's losses are counted (by the first sink worker reading this spool)
        self.salvage_counted = False
        #: counters since start
        self.evicted = 0
        self.read_errors = 0
        #: records skipped because their segment was removed, cut short or damaged while running
        self.lost = 0
        #: the segment being written was damaged or removed: the next append starts a new one
        self._rotate = False
        self._cursor_fd = -1
        self._head: Head | None = None
        self.committed = 0
        self.next_index = 1
        try:
            self._cursor_fd = os.open(self.dir / "cursor", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._head = Head(self.dir)
            self.report = self._salvage()
            self._new_tail()
        except BaseException:
            # no descriptor and no lock left behind: a later attempt (a reload) must find the directory free
            self._close_fds()
            raise

    # --- start-up ----------------------------------------------------------------------------------

    def _salvage(self) -> SalvageReport:
        committed = decode_cursor(os.pread(self._cursor_fd, 16, 0))
        self.committed = committed or 0
        cursor_gone = any(p.startswith("cursor:") for p, _ in self._set_apart)
        found = salvage(self.dir, self.committed, cursor_damaged=committed is None or cursor_gone,
                        set_apart=self._set_apart)
        self._segments.extend(found.segments)
        self.bytes = sum(seg.size for seg in found.segments)
        self._read_seg, self._read_off = found.read_segment, found.read_offset
        self.unread = found.report.pending
        self.last_read = self.committed
        self.next_index = max(self.committed, found.last_index) + 1
        report = found.report
        assert self._head is not None
        head = self._head.found
        if head is not None and (gone := missing_newest(head, found.last_index, self.committed)) is not None:
            problem, lost = gone
            report = replace(report, problems=(*report.problems, problem), missing=report.missing + lost)
            self.next_index = max(self.next_index, head[1] + 1)  # the lost records' numbers are not used again
        if not report.clean:
            log.warning("spool %s: salvaged %d pending records, %d lost; %s; quarantined: %s", self.dir,
                        report.pending, report.missing + report.damaged, "; ".join(report.problems),
                        ", ".join(report.quarantined) or "nothing")
        for seg, base in found.gaps:  # reported now: the next start need not report them again
            try:
                close_gap(seg, base)
            except OSError as exc:  # left open: reported again at the next start, nothing lost
                log.warning("spool %s: cannot close the gap before %s: %s", self.dir, seg.path.name,
                            exc.strerror or exc)
        return report

    # --- writing -----------------------------------------------------------------------------------

    def _new_tail(self) -> None:
        """Start a segment; an OSError leaves the current tail as it was."""
        seg = Segment(self.next_index, self.dir / f"{self.next_index:020d}.wal", last=self.next_index - 1)
        # O_APPEND: after a failed write is truncated away, the next one starts at the new end, not past a hole
        fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, wal.MAGIC)
        except OSError:
            os.close(fd)
            seg.path.unlink(missing_ok=True)
            raise
        self._note_head(seg)
        if self._tail_fd >= 0:
            if self.fsync == "never":
                os.close(self._tail_fd)
            else:
                self._retired.append(self._tail_fd)  # fsynced by the next sync job, then closed
        self._tail_fd = fd
        self._rotate = False
        self._segments.append(seg)
        self.bytes += seg.size
        if self._read_seg is None:
            self._read_seg, self._read_off = seg, seg.size
        self._dir_dirty = self.fsync != "never"  # synced by the next sync job, in its thread

    def append(self, events: Sequence[Event]) -> int:
        """Write ``events`` as records at the tail, all or nothing; returns the last index. SinkError if the
        disk refuses."""
        if not events:
            return self.next_index - 1
        return self._append(events)

    def _append(self, events: Sequence[Event]) -> int:
        data = wal.encode_many(self.next_index, events)
        try:
            if not self._tail_named():  # checked before anything more is written, or the tail is retired
                self._rotate = True  # new records go to a new segment
            if self._rotate or (self._tail.size >= self.segment_bytes and self._tail.count):
                self._new_tail()
        except OSError as exc:
            raise SinkError(f"spool {self.dir}: write failed: {exc.strerror or exc}") from exc
        tail = self._tail
        try:
            view, done = memoryview(data), 0
            while done < len(data):
                done += os.write(self._tail_fd, view[done:])
        except OSError as exc:
            try:
                os.ftruncate(self._tail_fd, tail.size)  # no half record left behind
            except OSError:
                pass
            raise SinkError(f"spool {self.dir}: write failed: {exc.strerror or exc}") from exc
        n = len(events)
        tail.size += len(data)
        tail.count += n
        self.bytes += len(data)
        self.next_index += n
        tail.last = self.next_index - 1
        self.unread += n
        self._note_head(tail)
        return tail.last

    def _note_head(self, tail: Segment) -> None:
        if self._head is not None:
            self._head.note(tail.base, tail.last)

    def sync_begin(self) -> tuple[Callable[[], None], list[int]]:
        """A job that fsyncs everything written so far (safe to run in a thread), and the fds it uses.

        Hand the fds to :meth:`sync_end` once the job is over (in the loop's thread):
        a file descriptor is closed only when no job is using it any more.
        """
        fds = [*self._retired, self._tail_fd]
        if self._cursor_dirty:
            fds.append(self._cursor_fd)
            self._cursor_dirty = False
        head = self._head
        if head is not None and head.fd >= 0 and head.dirty:
            fds.append(head.fd)
            head.dirty = False
        for fd in fds:
            self._users[fd] = self._users.get(fd, 0) + 1
        new_entries, self._dir_dirty = self._dir_dirty, False

        def job() -> None:
            try:
                for fd in fds:
                    os.fsync(fd)
                if new_entries:
                    fsync_dir(self.dir)
            except OSError:
                self._dir_dirty = self._dir_dirty or new_entries  # the retry syncs the directory too
                raise

        return job, fds

    def sync_end(self, fds: list[int]) -> None:
        for fd in fds:
            self._users[fd] -= 1
            if not self._users[fd]:
                del self._users[fd]
                if fd in self._retired:
                    self._retired.remove(fd)
                    os.close(fd)

    def sync(self) -> None:
        """fsync now, in this thread (``never``: nothing)."""
        if self.fsync != "never":
            job, fds = self.sync_begin()
            try:
                job()
            finally:
                self.sync_end(fds)

    def close(self) -> None:
        """Make what was written durable and release the directory (reopening salvages it)."""
        try:
            self._tail_named()
            self.sync()
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (*self._retired, self._tail_fd, self._read_fd, self._cursor_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        if self._head is not None:
            self._head.close()
        self._retired = []
        self._tail_fd = self._read_fd = self._cursor_fd = self._lock_fd = -1

    # --- one Spool per directory per process (a reloaded configuration shares the running one) -----

    @classmethod
    def shared(cls, directory: str | os.PathLike[str], **kw: Any) -> Spool:
        """The open spool of ``directory`` in this process, or a new one; pair with :meth:`release`."""
        key = Path(directory).resolve()
        sp = _OPEN.get(key)
        if sp is None:
            sp = _OPEN[key] = cls(directory, **kw)
        sp._refs += 1
        return sp

    @property
    def refs(self) -> int:
        return self._refs

    def release(self) -> None:
        """Drop one :meth:`shared` reference; the last one closes the spool."""
        self._refs -= 1
        if self._refs <= 0:
            _OPEN.pop(self.dir.resolve(), None)
            self.close()


_OPEN: dict[Path, Spool] = {}
