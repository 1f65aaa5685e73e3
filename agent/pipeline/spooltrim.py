"""Trimming a spool: the cursor moved past what was delivered, spent segments deleted, and ``drop_oldest``.

:class:`SpoolTrim` is the trimming side of :class:`~.spool.Spool` (a mixin over
the read side, :class:`~.spoolread.SpoolReader`: the spool's state is one
object). Records are trimmed only once the cursor that says they were delivered
is written: a cursor that cannot be written is a :class:`~agent.errors.SinkError`
that changes nothing, and the next :meth:`SpoolTrim.commit` writes it again.
"""

from __future__ import annotations

import logging
import os

from ..errors import SinkError
from .salvage import Segment, close_gap, encode_cursor
from .spoolread import SpoolReader

__all__ = ["SpoolTrim"]

log = logging.getLogger("hoststamp.spool")


class SpoolTrim(SpoolReader):
    """The trimming side of a spool; :class:`~.spool.Spool` sets up every attribute declared here."""

    _cursor_fd: int
    #: the cursor was written since the last sync
    _cursor_dirty: bool
    #: the spool's size on disk, in bytes, and the size at which the segment being written is full
    bytes: int
    segment_bytes: int
    #: records evicted by ``drop_oldest`` since start
    evicted: int

    def commit(self, index: int) -> int:
        """Records up to ``index`` are delivered: move the cursor, delete spent segments; bytes freed.

        A cursor that cannot be written is a :class:`SinkError` and changes
        nothing: calling again (with the same ``index`` or a later one) retries.
        """
        if index <= self.committed or self.hold_cursor:
            return 0
        try:
            os.pwrite(self._cursor_fd, encode_cursor(index), 0)
        except OSError as exc:
            raise SinkError(f"spool {self.dir}: cannot write the cursor: {exc.strerror or exc}") from exc
        self._cursor_dirty = True
        self.committed = index
        while self._handed and self._handed[0][0] <= index:
            first, last, n = self._handed.popleft()
            if last > index and last - first + 1 == n:  # part of a batch (indexes without gaps)
                self._handed.appendleft((index + 1, last, last - index))
                n = index - first + 1
            self.outstanding -= n
        freed = 0
        while len(self._segments) > 1 and self._segments[0].last <= index:
            if self._segments[0] is self._read_seg:
                if self._read_off < self._read_seg.size:
                    break
                self._advance()  # the reader finished it; a blocked producer must not wait for the next read
            freed += self._drop_head()
        tail = self._tail
        if (len(self._segments) == 1 and tail.count and tail.last <= index and tail.read == tail.count
                and tail.size >= self.segment_bytes // 4):
            try:
                self._new_tail()
            except OSError as exc:  # only a chance to free space early: the next commit tries again
                log.warning("spool %s: cannot start a new segment: %s", self.dir, exc.strerror or exc)
                return freed
            self._advance()
            freed += self._drop_head()
        return freed

    def _drop_head(self) -> int:
        seg = self._segments.popleft()
        try:
            seg.path.unlink(missing_ok=True)
        except OSError as exc:  # what it holds is delivered or given up: a restart's salvage deletes it
            log.warning("spool %s: cannot delete %s: %s", self.dir, seg.path.name, exc.strerror or exc)
        self.bytes -= seg.size
        return seg.size

    def _in_flight(self, s: Segment) -> bool:
        """Whether the sink holds some of ``s``'s records unconfirmed (handed out: (committed, last_read])."""
        return self.last_read > self.committed and s.last > self.committed and s.base <= self.last_read

    def evictable_bytes(self) -> int:
        """The bytes :meth:`evict_oldest` could free, called until it can free no more."""
        return sum(s.size for s in self._segments if s.count and not self._in_flight(s))

    def evict_oldest(self) -> int | None:
        """Delete the oldest segment none of whose records the sink holds unconfirmed (``drop_oldest``):
        returns its records not yet delivered (lost, counted), maybe 0. Records handed to the sink and not
        confirmed are in flight: their segment, their durable copy, is kept. None when no segment may go (none
        on disk, or all in flight)."""
        i, seg = next(((i, s) for i, s in enumerate(self._segments) if s.count and not self._in_flight(s)),
                      (-1, None))
        if seg is None:
            return None
        if seg is self._tail:
            self._new_tail()
        if seg is self._read_seg:
            self._advance()
        lost = max(seg.count - seg.read, 0)
        self._segments.remove(seg)
        try:
            seg.path.unlink(missing_ok=True)
        except OSError as exc:  # its records are given up either way: a restart's salvage deletes it
            log.warning("spool %s: cannot delete %s: %s", self.dir, seg.path.name, exc.strerror or exc)
        self.bytes -= seg.size
        self.unread -= lost
        self.evicted += lost
        if i > 0 and i < len(self._segments):
            # not the first: the next one takes its name, or a restart would take the gap for a removed segment
            try:
                close_gap(self._segments[i], seg.base, sync=False)
                self._dir_dirty = self.fsync != "never"  # the rename is made durable by the next sync job
            except OSError as exc:  # a restart then reports the evicted records as missing too
                log.warning("spool %s: cannot rename %s: %s", self.dir, self._segments[i].path.name,
                            exc.strerror or exc)
        return lost
