"""A sink's disk spool: a write-ahead log of signed events in segment files, trimmed once delivered.

Layout of a spool directory::

    00000000000000000001.wal   segments, named by the first record index they may hold
    00000000000000004097.wal   (records: see :mod:`.wal`)
    cursor                     u64 index of the last delivered record + CRC-32 (rewritten in place)
    lock                       flock'ed while an agent uses the directory
    quarantine/                damaged segments, moved aside on start

On start the spool salvages what it can and never refuses to start because of
damage: every intact record is kept (parsing resumes after a damaged stretch at
the next intact record), a damaged segment file is moved into ``quarantine/``
and replaced by a clean copy of its intact records, and :attr:`Spool.report`
says what happened. Records at or below the cursor were delivered and are
skipped. A new segment is started on every start, and when the one being
written reaches ``segment_bytes``; a segment is deleted once every record in it
is delivered (or evicted by ``drop_oldest``).

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
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import SinkError
from ..model import Event
from . import wal

__all__ = ["FsyncPolicy", "SalvageReport", "Spool"]

log = logging.getLogger("hoststamp.spool")

FsyncPolicy = Literal["always", "batch", "never"]

_SEGMENT = re.compile(r"^(\d{20})\.wal$")
_CURSOR = struct.Struct(">QI")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What the start-up scan found."""

    segments: int = 0
    #: intact records not yet delivered: what will be sent again
    pending: int = 0
    #: intact records skipped because the cursor says they were delivered
    delivered: int = 0
    corrupt_bytes: int = 0
    #: files moved aside into ``quarantine/``
    quarantined: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.quarantined and not self.problems


@dataclass(slots=True, eq=False)
class _Segment:
    base: int
    path: Path
    size: int = len(wal.MAGIC)
    count: int = 0
    last: int = 0
    #: records of this segment the reader has passed (handed out, or delivered before start)
    read: int = 0


@dataclass(slots=True)
class _Salvage:
    problems: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    corrupt_bytes: int = 0


class Spool:
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
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SinkError(f"spool {self.dir}: in use by another process") from None
        self._segments: deque[_Segment] = deque()
        #: old tail fds, closed once fsynced (see :meth:`sync_begin`)
        self._retired: list[int] = []
        self._users: dict[int, int] = {}
        self._refs = 0
        self._tail_fd = -1
        self._read_fd = -1
        self._read_seg: _Segment | None = None
        self._read_off = 0
        self._cursor_dirty = False
        self.bytes = 0
        #: records written and not yet handed to the reader
        self.unread = 0
        #: index of the last record handed out by :meth:`read`
        self.last_read = 0
        #: counters since start
        self.evicted = 0
        self.read_errors = 0
        self._cursor_fd = os.open(self.dir / "cursor", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.committed = 0
        self.report = self._salvage()
        self.next_index = max([self.committed, *(s.last for s in self._segments)]) + 1
        self._new_tail()

    # --- start-up ----------------------------------------------------------------------------------

    def _read_cursor(self, salvage: _Salvage) -> None:
        raw = os.pread(self._cursor_fd, _CURSOR.size, 0)
        if not raw:
            return
        if len(raw) == _CURSOR.size:
            index, check = _CURSOR.unpack(raw)
            if zlib.crc32(raw[:8]) == check:
                self.committed = index
                return
        salvage.problems.append("cursor damaged: every intact record will be sent again")

    def _salvage(self) -> SalvageReport:
        s = _Salvage()
        self._read_cursor(s)
        for tmp in self.dir.glob("*.wal.tmp"):
            tmp.unlink(missing_ok=True)  # an interrupted rewrite; the original is still there
        names = sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := _SEGMENT.match(p.name)))
        last = 0
        delivered = pending = 0
        for base, path in names:
            seg = self._scan(base, path, last, s)
            if seg is not None:
                last = max(last, seg.last)
            if seg is None or seg.count == 0 or seg.last <= self.committed:
                if seg is not None:
                    delivered += seg.count
                path.unlink(missing_ok=True)
                continue
            self._segments.append(seg)
            self.bytes += seg.size
        for seg in self._segments:
            skipped = self._position(seg) if self._read_seg is None else 0
            delivered += skipped
            pending += seg.count - skipped
        self.unread = pending
        self.last_read = self.committed
        report = SalvageReport(len(self._segments), pending, delivered, s.corrupt_bytes, tuple(s.quarantined),
                               tuple(s.problems))
        if not report.clean:
            log.warning("spool %s: salvaged %d pending records; %s; quarantined: %s", self.dir, pending,
                        "; ".join(report.problems), ", ".join(report.quarantined) or "nothing")
        return report

    def _scan(self, base: int, path: Path, after: int, s: _Salvage) -> _Segment | None:
        """Check one segment; rewrite it from its intact records if anything in it is damaged."""
        data = path.read_bytes()
        if not data:
            return None
        if not data.startswith(wal.MAGIC):
            self._quarantine(path, s, f"{path.name}: not a spool segment", len(data))
            return None
        good: list[wal.Record] = []
        pos, damage, first_problem = len(wal.MAGIC), 0, ""
        while True:
            parsed = wal.parse(data, pos, after=after)
            good.extend(parsed.records)
            if parsed.records:
                after = parsed.records[-1].index
            if parsed.status == "end":
                break
            first_problem = first_problem or f"{path.name}@{parsed.stop}: {parsed.problem}"
            nxt = wal.resync(data, parsed.stop, after=after)
            damage += (nxt if nxt is not None else len(data)) - parsed.stop
            if nxt is None:
                break
            pos = nxt
        seg = _Segment(base, path, count=len(good), last=good[-1].index if good else 0)
        seg.size = len(wal.MAGIC) + sum(r.end - r.start for r in good)
        if damage:
            clean = b"".join([wal.MAGIC, *(data[r.start : r.end] for r in good)])
            self._quarantine(path, s, f"{first_problem} ({damage} bytes unreadable, {len(good)} records kept)",
                             damage)
            if good:
                tmp = path.with_name(path.name + ".tmp")
                with open(tmp, "wb") as f:
                    f.write(clean)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                self._sync_dir()
        return seg

    def _quarantine(self, path: Path, s: _Salvage, problem: str, nbytes: int) -> None:
        qdir = self.dir / "quarantine"
        qdir.mkdir(exist_ok=True)
        dest = qdir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{os.getpid()}"
        os.replace(path, dest)
        s.problems.append(problem)
        s.quarantined.append(str(dest))
        s.corrupt_bytes += nbytes

    def _position(self, seg: _Segment) -> int:
        """Put the reader at the first undelivered record of ``seg``; returns how many it skipped."""
        with open(seg.path, "rb") as f:
            data = f.read()
        parsed = wal.parse(data, len(wal.MAGIC))
        skipped = 0
        for r in parsed.records:
            if r.index > self.committed:
                break
            skipped += 1
        self._read_seg = seg
        self._read_off = parsed.records[skipped].start if skipped < len(parsed.records) else len(data)
        seg.read = skipped
        return skipped

    # --- writing -----------------------------------------------------------------------------------

    def _sync_dir(self) -> None:
        if self.fsync == "never":
            return
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _new_tail(self) -> None:
        if self._tail_fd >= 0:
            if self.fsync == "never":
                os.close(self._tail_fd)
            else:
                self._retired.append(self._tail_fd)  # fsynced by the next sync job, then closed
        seg = _Segment(self.next_index, self.dir / f"{self.next_index:020d}.wal", last=self.next_index - 1)
        fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.write(fd, wal.MAGIC)
        self._tail_fd = fd
        self._segments.append(seg)
        self.bytes += seg.size
        if self._read_seg is None:
            self._read_seg, self._read_off = seg, seg.size
        self._sync_dir()

    @property
    def _tail(self) -> _Segment:
        return self._segments[-1]

    def append(self, events: Sequence[Event]) -> int:
        """Write ``events`` as records at the tail; returns the last index. SinkError if the disk refuses."""
        if not events:
            return self.next_index - 1
        if self._tail.size >= self.segment_bytes and self._tail.count:
            self._new_tail()
        data = wal.encode_many(self.next_index, events)
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
        return tail.last

    def sync_begin(self) -> tuple[Callable[[], None], list[int]]:
        """A job that fsyncs everything written so far (safe to run in a thread), and the fds it uses.

        Hand the fds to :meth:`sync_end` once the job is over (in the loop's thread):
        a file descriptor is closed only when no job is using it any more.
        """
        fds = [*self._retired, self._tail_fd]
        if self._cursor_dirty:
            fds.append(self._cursor_fd)
            self._cursor_dirty = False
        for fd in fds:
            self._users[fd] = self._users.get(fd, 0) + 1

        def job() -> None:
            for fd in fds:
                os.fsync(fd)

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

    # --- reading -----------------------------------------------------------------------------------

    def read(self, limit: int, upto: int | None = None) -> list[Event]:
        """Up to ``limit`` records after the last one read, in order (none with an index above ``upto``)."""
        out: list[Event] = []
        while len(out) < limit and self._read_seg is not None and (upto is None or self.last_read < upto):
            seg = self._read_seg
            if self._read_off >= seg.size:
                if seg is self._tail:
                    break
                self._advance()
                continue
            if self._read_fd < 0:
                self._read_fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
            want = min(seg.size - self._read_off, _READ_CHUNK)
            data = os.pread(self._read_fd, want, self._read_off)
            parsed = wal.parse(data, 0, after=self.last_read, limit=limit - len(out), upto=upto)
            if parsed.status == "partial" and not parsed.records and want < seg.size - self._read_off:
                length = struct.unpack_from(">I", data)[0]  # one record larger than a chunk
                data = os.pread(self._read_fd, wal.HEADER + length, self._read_off)
                parsed = wal.parse(data, 0, after=self.last_read, limit=1)
            for r in parsed.records:
                out.append(r.event)
            if parsed.records:
                self.last_read = parsed.records[-1].index
                seg.read += len(parsed.records)
                self.unread -= len(parsed.records)
            self._read_off += parsed.stop
            if parsed.status == "end" and parsed.stop < len(data):
                break  # stopped by limit or upto
            if parsed.status == "corrupt" or (parsed.status == "partial" and not parsed.records):
                self._skip_damage(seg, parsed.problem)
        return out

    def _skip_damage(self, seg: _Segment, problem: str) -> None:
        lost = max(seg.count - seg.read, 0)
        self.read_errors += 1
        log.error("spool %s: %s at %s offset %d; skipping %d records", self.dir, problem, seg.path.name,
                  self._read_off, lost)
        seg.read = seg.count
        self.unread -= lost
        self._read_off = seg.size

    def _advance(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        i = next(i for i, seg in enumerate(self._segments) if seg is self._read_seg)
        self._read_seg, self._read_off = self._segments[i + 1], len(wal.MAGIC)

    # --- trimming ----------------------------------------------------------------------------------

    def commit(self, index: int) -> int:
        """Records up to ``index`` are delivered: move the cursor, delete spent segments; bytes freed."""
        if index <= self.committed:
            return 0
        self.committed = index
        raw = struct.pack(">Q", index)
        os.pwrite(self._cursor_fd, raw + struct.pack(">I", zlib.crc32(raw)), 0)
        self._cursor_dirty = True
        freed = 0
        while len(self._segments) > 1 and self._segments[0].last <= index and self._segments[0] is not self._read_seg:
            freed += self._drop_head()
        tail = self._tail
        if (len(self._segments) == 1 and tail.count and tail.last <= index and tail.read == tail.count
                and tail.size >= self.segment_bytes // 4):
            self._new_tail()
            self._advance()
            freed += self._drop_head()
        return freed

    def _drop_head(self) -> int:
        seg = self._segments.popleft()
        seg.path.unlink(missing_ok=True)
        self.bytes -= seg.size
        return seg.size

    def evict_oldest(self) -> int | None:
        """Delete the oldest segment whatever its state (``drop_oldest``); unread records lost, or None."""
        if len(self._segments) == 1:
            if not self._tail.count:
                return None
            self._new_tail()
        seg = self._segments[0]
        lost = seg.count - seg.read
        if seg is self._read_seg:
            self._advance()
        self._drop_head()
        self.unread -= lost
        self.evicted += lost
        return lost

    def close(self) -> None:
        """Make what was written durable and release the directory (reopening salvages it)."""
        try:
            self.sync()
        finally:
            for fd in (*self._retired, self._tail_fd, self._read_fd, self._cursor_fd, self._lock_fd):
                if fd >= 0:
                    os.close(fd)
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
