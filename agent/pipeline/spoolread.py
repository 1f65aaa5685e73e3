"""Reading a spool back: records across segments, in order, through damage done while running.

:class:`SpoolReader` is the read side of :class:`~.spool.Spool` (a mixin: the
spool's state is one object, the writer and the reader share its segment list).
The reader keeps one position, a segment and an offset in it, and a descriptor
open on that segment's file; it parses records with :func:`.wal.parse` in
chunks of at most 1 MiB (a single larger record is read whole) and stops at the
end of the segment being written, at ``limit`` records or past ``upto``.

Damage met while running (a segment removed, cut short or overwritten from
outside) never stops the reader: it hands out every intact record before the
damage, logs the segment's name and how many records it loses, counts them in
:attr:`SpoolReader.lost`, and goes on with the next segment. A removed segment
that is still being written is read from the spool's own open descriptor
(through ``/proc/self/fd``), so nothing in it is lost. When the damaged segment
is the one being written, new records go to a fresh segment. Any other error
reading a segment (``EIO``) is a :class:`~agent.errors.SinkError` the caller
retries, raised only when nothing was read before it: nothing is skipped for an
error that may pass, and the descriptor is closed so that the retry opens the
file by name again. Removing the unreadable segment is how an operator gives up
on it; the reader then counts its records as lost and moves on.

What was handed out is remembered per read batch (``_handed``) so that the
spool's commit can tell how many records are still outstanding, and so that a
new reader (a reload's) can start over at the first record not confirmed
(:meth:`SpoolReader.rewind`). A segment being written that was removed is
written back under its name before anything more goes to it
(:meth:`SpoolReader._restore_tail`), whichever side finds it first.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections import deque
from pathlib import Path

from ..errors import SinkError
from ..model import Event
from . import wal
from .salvage import Segment, first_undelivered

__all__ = ["SpoolReader"]

log = logging.getLogger("hoststamp.spool")

_READ_CHUNK = 1 << 20


class SpoolReader:
    """The read side of a spool; :class:`~.spool.Spool` sets up every attribute declared here."""

    dir: Path
    _segments: deque[Segment]
    _tail_fd: int
    _read_fd: int
    _read_seg: Segment | None
    _read_off: int
    #: records written and not yet handed to the reader
    unread: int
    #: index of the last record handed out by :meth:`read`
    last_read: int
    #: records handed out and not yet committed, and the read batches they came in: (first, last index, count)
    outstanding: int
    _handed: deque[tuple[int, int, int]]
    read_errors: int
    #: records skipped because their segment was removed, cut short or damaged while running
    lost: int
    #: the segment being written was damaged or removed: the next append starts a new one
    _rotate: bool
    #: the cursor: records up to it are delivered
    committed: int
    fsync: str
    #: old tail descriptors, closed once no sync job uses them
    _retired: list[int]
    _users: dict[int, int]
    _dir_dirty: bool
    #: a rewind failed: commits move the cursor no further (see :meth:`rewind`)
    hold_cursor: bool

    def _new_tail(self) -> None:
        """Start a segment (the writer's); an OSError leaves the current tail as it was."""
        raise NotImplementedError

    @property
    def _tail(self) -> Segment:
        return self._segments[-1]

    def read(self, limit: int, upto: int | None = None) -> list[Event]:
        """Up to ``limit`` records after the last one read, in order (none with an index above ``upto``).

        A segment that cannot be read raises :class:`SinkError`, but only when
        nothing was read before it: records already taken are handed out first.
        """
        out: list[Event] = []
        while len(out) < limit and self._read_seg is not None and (upto is None or self.last_read < upto):
            seg = self._read_seg
            if self._read_off >= seg.size:
                if seg is self._tail:
                    break
                self._advance()
                continue
            try:
                chunk = self._read_chunk(seg)
            except OSError as exc:
                self._close_reader()  # the next attempt opens the file by name again (gone: counted, skipped)
                if out:
                    break
                raise SinkError(f"spool {self.dir}: cannot read {seg.path.name} at offset {self._read_off}: "
                                f"{exc.strerror or exc}") from exc
            if chunk is None:
                continue  # the file was gone: skipped, or reopened through the descriptor still writing it
            data, short = chunk  # short: the file ends before its recorded size
            parsed = wal.parse(data, 0, after=self.last_read, limit=limit - len(out), upto=upto)
            for r in parsed.records:
                out.append(r.event)
            if parsed.records:
                self.last_read = parsed.records[-1].number
                seg.read += len(parsed.records)
                self.unread -= len(parsed.records)
                self.outstanding += len(parsed.records)
                self._handed.append((parsed.records[0].number, self.last_read, len(parsed.records)))
            file_end = self._read_off + len(data)
            self._read_off += parsed.stop
            if parsed.status == "end" and parsed.stop < len(data):
                break  # stopped by limit or upto
            if parsed.status == "corrupt":
                self._skip_damage(seg, f"{parsed.problem} at offset {self._read_off}")
            elif short:
                self._skip_damage(seg, f"cut short at byte {file_end} of {seg.size}")
            elif parsed.status == "partial" and not parsed.records:
                self._skip_damage(seg, f"{parsed.problem} at offset {self._read_off}")
        return out

    def _read_chunk(self, seg: Segment) -> tuple[bytes, bool] | None:
        """The next bytes of ``seg`` and whether the file ended before its recorded size; None if it is gone."""
        if self._read_fd < 0:
            try:
                self._read_fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._gone(seg)
                return None
        left = seg.size - self._read_off
        want = min(left, _READ_CHUNK)
        data = os.pread(self._read_fd, want, self._read_off)
        if len(data) == want < left and want >= wal.HEADER:
            length = struct.unpack_from(">I", data)[0]
            if want < wal.HEADER + length and length <= wal.MAX_PAYLOAD:  # one record larger than a chunk
                want = min(wal.HEADER + length, left)
                data = os.pread(self._read_fd, want, self._read_off)
        return data, len(data) < want and os.fstat(self._read_fd).st_size < self._read_off + want

    def _gone(self, seg: Segment) -> None:
        """``seg``'s file was removed: the one being written is written back under its name (else read through
        the descriptor writing it); any other is counted lost."""
        if seg is self._tail and self._tail_fd >= 0:
            try:
                self._restore_tail()
            except OSError as exc:
                log.warning("spool %s: %s was removed while being written and cannot be written back: %s",
                            self.dir, seg.path.name, exc.strerror or exc)
            else:
                return  # read again by its name
            try:  # the file lives on while the spool holds it open; /proc reaches it without a name
                self._read_fd = os.open(f"/proc/self/fd/{self._tail_fd}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
            else:
                self.read_errors += 1
                log.warning("spool %s: %s was removed while being written; its records are read from the open "
                            "file, new ones go to a new segment", self.dir, seg.path.name)
                self._start_over()
                return
        self._skip_damage(seg, "removed")

    def _skip_damage(self, seg: Segment, problem: str) -> None:
        """Give up on the rest of ``seg``: count and name what is lost, never read it again (a reader after a
        rewind, meeting damage its predecessor gave up on, skips it without counting it again)."""
        if seg.given_up:
            seg.read = seg.count
            self._read_off = seg.size
            return
        lost = max(seg.count - seg.read, 0)
        self.read_errors += 1
        self.lost += lost
        log.error("spool %s: segment %s: %s; %d records in it lost", self.dir, seg.path.name, problem, lost)
        seg.read = seg.count
        seg.given_up = True
        self.unread -= lost
        self._read_off = seg.size
        if seg is self._tail:
            self._start_over()

    def _start_over(self) -> None:
        """New records go to a new segment, not after damage in the one being written."""
        try:
            self._new_tail()
        except OSError as exc:  # the next append tries again (and fails as a write the queue retries)
            self._rotate = True
            log.warning("spool %s: cannot start a new segment: %s", self.dir, exc.strerror or exc)

    def _close_reader(self) -> None:
        if self._read_fd >= 0:
            fd, self._read_fd = self._read_fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    def _advance(self) -> None:
        self._close_reader()
        i = next(i for i, seg in enumerate(self._segments) if seg is self._read_seg)
        self._read_seg, self._read_off = self._segments[i + 1], len(wal.MAGIC)

    # --- a segment being written that was removed, and a reader that starts over ---------------------

    def _restore_tail(self) -> None:
        """The segment being written was removed: write what it holds back under its name (from the open
        descriptor) and go on writing there, so that what was written to it, and what is acknowledged from
        now on, is on disk under a name a restart finds. OSError if that cannot be done."""
        tail = self._tail
        src = os.open(f"/proc/self/fd/{self._tail_fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(src, tail.size, 0)
        finally:
            os.close(src)
        if len(data) != tail.size:  # cut short as well: its records are judged by the reader, as damage
            raise OSError(errno.EIO, f"{tail.path.name} holds {len(data)} of its {tail.size} bytes")
        # written straight under its name (free: it was removed): a crash midway leaves a torn segment, whose
        # intact records the start-up salvage keeps, as after any crash while writing
        fd = os.open(tail.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view, done = memoryview(data), 0
            while done < len(data):
                done += os.write(fd, view[done:])
        except BaseException:
            os.close(fd)
            tail.path.unlink(missing_ok=True)
            raise
        old, self._tail_fd = self._tail_fd, fd
        if self.fsync == "never" and not self._users.get(old):
            os.close(old)
        else:
            self._retired.append(old)  # closed once no sync job uses it

        if self._read_seg is tail:
            self._close_reader()  # the reader opens it again by name
        self._dir_dirty = self.fsync != "never"
        log.warning("spool %s: %s was removed while being written; its %d records are written back under its "
                    "name", self.dir, tail.path.name, tail.count)

    def _tail_named(self) -> bool:
        """Whether the segment being written has its name: it was not removed, or is written back now (see
        :meth:`_restore_tail`); False, logged, when it cannot be."""
        if self._tail_fd < 0 or not self._tail_removed():
            return True
        try:
            self._restore_tail()
        except OSError as exc:
            log.error("spool %s: %s was removed while being written and cannot be written back: %s", self.dir,
                      self._tail.path.name, exc.strerror or exc)
            return False
        return True

    def _tail_removed(self) -> bool:
        """The segment being written was removed from the directory (its records would go nowhere durable)."""
        try:
            return os.fstat(self._tail_fd).st_nlink == 0
        except OSError:
            return False

    def rewind(self) -> int:
        """Hand out again what was handed out and not committed: a reader that ended without its sink
        confirming (a reload whose old sink was down) leaves those records to the next one, which reads from
        the first record after the cursor. Returns how many records that is."""
        n = self.outstanding
        if n <= 0:
            return 0
        first = next((s for s in self._segments if s.count and s.last > self.committed), None)
        if first is None:
            return 0
        read_before = first.read
        try:
            if first is self._tail and self._tail_fd >= 0 and self._tail_removed():
                self._restore_tail()  # removed while being written: back under its name, to be read again
            offset = first_undelivered(first, self.committed)  # sets first.read to the records before it
        except OSError as exc:
            # it cannot be read again: the cursor stays where it is, so that what was not confirmed is not
            # committed over by the next reader; those records are sent at the next start
            first.read = read_before
            self.hold_cursor = True
            log.error("spool %s: cannot read %s again to send what was not confirmed (%s); the spool keeps it "
                      "and everything after it until the next start", self.dir, first.path.name,
                      exc.strerror or exc)
            return 0
        if first.given_up:
            first.read = first.count  # its loss is counted: re-reading it changes no count
        self._close_reader()
        for seg in self._segments:
            if seg.base > first.base and not seg.given_up:  # a given-up one keeps its count (loss counted)
                seg.read = 0
        self._read_seg, self._read_off = first, offset
        self.unread += n
        self.outstanding = 0
        self._handed.clear()
        self.last_read = self.committed
        return n

    @property
    def pending(self) -> int:
        """Records written and not yet delivered: what a restart would send."""
        return self.unread + self.outstanding
