"""The spool's ``head`` file: where its newest segment starts, and the last record written to it.

Segment files are named by the first record index they may hold, so a segment
removed from the middle of a spool shows as a gap in the names; the newest one
removed leaves none. The head closes that hole: it names the newest segment
and the last record written into it. A start that finds that segment gone
reports it (``missing``) and counts the undelivered records it held, like a
segment missing in the middle.

Format: two big-endian u64 (the segment's first index, the last record index
written) and a CRC-32 of both, rewritten in place after each write to the
segment; fsynced with the segments (``spool_fsync``), never on its own.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

__all__ = ["HEAD_FILE", "Head", "missing_newest"]

HEAD_FILE = "head"
_HEAD = struct.Struct(">QQ")

log = logging.getLogger("hoststamp.spool")


class Head:
    """The open head file of a spool directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.fd = os.open(directory / HEAD_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._failed = False
        #: what it said when opened: (first index of the newest segment, last record written), or None (new or
        #: damaged)
        self.found = _decode(os.pread(self.fd, _HEAD.size + 8, 0))
        self._written: tuple[int, int] | None = self.found
        #: written since the last sync
        self.dirty = False

    def note(self, base: int, last: int) -> None:
        """:meth:`write`, logging a failure once (the spool goes on: only a removed newest segment would then go
        unreported)."""
        try:
            self.write(base, last)
        except OSError as exc:
            if not self._failed:
                log.warning("spool %s: cannot write its head: %s", self.dir, exc.strerror or exc)
            self._failed = True
        else:
            self._failed = False

    def write(self, base: int, last: int) -> None:
        """Say that the newest segment starts at ``base`` and holds records up to ``last``; nothing when it
        says so already. An OSError is left to the caller (the spool goes on without it)."""
        if self._written == (base, last):
            return
        raw = _HEAD.pack(base, last)
        os.pwrite(self.fd, raw + struct.pack(">I", zlib.crc32(raw)), 0)
        self._written = (base, last)
        self.dirty = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _decode(raw: bytes) -> tuple[int, int] | None:
    if len(raw) != _HEAD.size + 4:
        return None
    body, (check,) = raw[: _HEAD.size], struct.unpack(">I", raw[_HEAD.size :])
    if zlib.crc32(body) != check:
        return None
    base, last = _HEAD.unpack(body)
    return (base, last) if 0 < base <= last + 1 else None


def missing_newest(found: tuple[int, int] | None, last_index: int, committed: int) -> tuple[str, int] | None:
    """When records the head says the newest segment held are in no segment of the spool (``last_index``: the
    highest record index found, under whatever name its segment has now), and were not delivered: the
    problem to report, and how many they are. A newest segment with no record yet claims nothing."""
    if found is None:
        return None
    base, last = found
    seen = max(last_index, committed)
    if last < base or last <= seen:
        return None
    first = seen + 1  # beyond every segment present: no gap between two of them shows these
    if first >= base:
        what = f"record {first}" if first == last else f"records {first} to {last}"
        return (f"{what} of the newest segment, {base:020d}.wal, lost: no segment holds them (removed, or cut "
                "short)", last - first + 1)
    return (f"segments missing up to the newest, {base:020d}.wal: records {first} to {last} lost",
            last - first + 1)
