"""The spool's start-up scan: keep every intact record, move damaged files aside, never refuse to start.

A record whose length is implausible, whose CRC does not match, whose fields
do not decode or whose index does not go up is damage; parsing resumes at the
next offset where an intact record with a higher index begins. A segment with
damage is moved into ``quarantine/`` unchanged and replaced by a clean copy of
its intact records; a file named like a segment that holds no intact record is
not one, and is quarantined whole (files with other names are not the spool's,
and are left alone). Segments whose records were all delivered (at or below
the cursor) are deleted. Segments are read in the order of their records (of
each file's first intact record), not of their names, so that a file renamed
or copied under any name is read where its records belong; the spool names a
segment by its first record index, so of two files starting with the same
record the one so named is the segment, the other a copy. Hence a
segment file removed while the agent was stopped shows as a gap between the
records of the one before it and the name of the one after: the gap is reported
by the missing file's name and the records lost with it. The segment after a
gap is then renamed to close it (:func:`close_gap`, once the report is out), so
that the loss is reported once, not again at every start. A gap is told by the
names and by the records' own numbers: a segment renamed ahead whose records
follow the ones before it loses nothing. A record intact in any file is present:
a record a damaged segment lost is taken from another file that holds it intact
(:func:`.salvageread.borrow`), and only pending records no file holds intact are
lost. A file holding only records the spool already has (in a segment kept before
it, or delivered, and then not named by its first record) is a copy: it is moved
aside whole and reported, never read again nor counted as lost, damaged or not.
:func:`salvage` says what it did in a
:class:`SalvageReport`.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import wal
from .salvageread import Intact, SegmentFile, borrow, intact, survey

__all__ = ["SEGMENT", "SalvageReport", "Salvaged", "Segment", "close_gap", "decode_cursor", "encode_cursor",
           "first_undelivered", "fsync_dir", "not_a_file", "salvage", "set_aside"]

SEGMENT = re.compile(r"^(\d{20})\.wal$")
_CURSOR = struct.Struct(">QI")


def encode_cursor(index: int) -> bytes:
    raw = struct.pack(">Q", index)
    return raw + struct.pack(">I", zlib.crc32(raw))


def decode_cursor(raw: bytes) -> int | None:
    """The index in a cursor file's bytes; 0 for an empty file, None if damaged."""
    if not raw:
        return 0
    if len(raw) != _CURSOR.size:
        return None
    index, check = _CURSOR.unpack(raw)
    return index if zlib.crc32(raw[:8]) == check else None


@dataclass(slots=True, eq=False)
class Segment:
    """One segment file as the spool tracks it."""

    base: int
    path: Path
    size: int = len(wal.MAGIC)
    count: int = 0
    last: int = 0
    #: records of this segment the reader has passed (handed out, or delivered before start)
    read: int = 0
    #: damage while running made the reader give up on the rest of it (its loss is counted): never read again
    given_up: bool = False


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What the start-up scan found."""

    segments: int = 0
    #: intact records not yet delivered: what will be sent again
    pending: int = 0
    #: intact records skipped because the cursor says they were delivered
    delivered: int = 0
    corrupt_bytes: int = 0
    #: undelivered records whose segment file is gone
    missing: int = 0
    #: files moved aside into ``quarantine/``
    quarantined: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    #: undelivered records lost in damaged segments, as far as the segments' names and the intact records tell
    #: (the end of the last segment cannot be told)
    damaged: int = 0
    #: records in intact files set aside as copies of records the spool holds or delivered (not sent again, not lost)
    duplicates: int = 0

    @property
    def clean(self) -> bool:
        return not self.quarantined and not self.problems


@dataclass(slots=True)
class Salvaged:
    segments: list[Segment]
    report: SalvageReport
    #: where the reader starts: the first undelivered record (None: no segment holds one)
    read_segment: Segment | None
    read_offset: int
    #: the highest record index seen, delivered or not
    last_index: int
    #: gaps to close (:func:`close_gap`) once the report is out: until then, a start that fails finds them again
    gaps: list[tuple[Segment, int]] = field(default_factory=list)


@dataclass(slots=True)
class _Notes:
    problems: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    corrupt_bytes: int = 0
    missing: int = 0
    damaged: int = 0
    duplicates: int = 0
    #: runs of record numbers the segments scanned so far hold, in order: (first, last, file name)
    runs: list[tuple[int, int, str]] = field(default_factory=list)

    def quarantine(self, path: Path, problem: str, nbytes: int, *, keep: bool = False) -> None:
        self.problems.append(problem)
        self.quarantined.append(set_aside(path, keep=keep))
        self.corrupt_bytes += nbytes

    def hold(self, name: str, numbers: list[int]) -> None:
        """Note that segment ``name`` holds the (increasing) record ``numbers``."""
        for n in numbers:
            if self.runs and self.runs[-1][2] == name and self.runs[-1][1] + 1 == n:
                self.runs[-1] = (self.runs[-1][0], n, name)
            else:
                self.runs.append((n, n, name))

    def lost_in(self, first: int, last: int, committed: int, where: str) -> int:
        """Undelivered record numbers from ``first`` to ``last`` that no segment scanned so far holds: how many,
        and which in a problem (``where``: the damaged segment that held them)."""
        lost, n = [], max(first, committed + 1)
        for a, b, _ in sorted(r for r in self.runs if r[1] >= n and r[0] <= last):
            if a > n:
                lost.append((n, a - 1))
            n = max(n, b + 1)
        if n <= last:
            lost.append((n, last))
        if lost:
            said = ", ".join(str(a) if a == b else f"{a} to {b}" for a, b in lost[:3]) + (", …" * (len(lost) > 3))
            one = len(lost) == 1 and lost[0][0] == lost[0][1]
            self.problems.append(f"record{'' if one else 's'} {said} lost: {where} was damaged, and "
                                 "no other file holds them")
        return sum(b - a + 1 for a, b in lost)

    def holder(self, n: int) -> str | None:
        """The segment scanned so far that holds record ``n``, if one does."""
        i = bisect.bisect_right(self.runs, n, key=lambda run: run[0]) - 1
        return self.runs[i][2] if i >= 0 and self.runs[i][0] <= n <= self.runs[i][1] else None


def set_aside(path: Path, *, keep: bool = False) -> str:
    """Move ``path`` (a file, or whatever else has the name) into ``quarantine/`` beside it, unchanged; returns
    where it went. ``keep``: link it there instead, leaving it in place until what replaces it is renamed over
    it, so that no moment (a crash) finds neither."""
    qdir = path.parent / "quarantine"
    qdir.mkdir(exist_ok=True)
    dest = qdir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{os.getpid()}"
    n = 1
    while os.path.lexists(dest):  # set aside before in the same second, by a start that was cut short
        dest = dest.with_name(f"{dest.name.rsplit('~', 1)[0]}~{n}")
        n += 1
    if keep:
        os.link(path, dest)
        fsync_dir(qdir)
    else:
        os.replace(path, dest)
    return str(dest)


def not_a_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file (a directory, a link, a FIFO that would block
    the read for good, ...), else None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "device"


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_problem(f: SegmentFile, got: Intact, committed: int, notes: _Notes) -> str | None:
    """When every intact record of file ``f`` is one the spool already has (in a segment kept before it) or
    delivered, and it is no segment left behind once delivered (it holds records the spool has, or is not named
    by its first record): the problem that says it is set aside. Damage in it then costs nothing."""
    recs = got.records
    holders: list[str] = []
    for r in recs:
        if r.number <= committed:
            continue  # delivered
        if (h := notes.holder(r.number)) is None:
            return None  # a record the spool has not: not a copy
        if h not in holders:
            holders.append(h)
    if not recs or (not holders and f.genuine):
        return None
    first, last = recs[0].number, recs[-1].number
    where = (f"which the spool already has ({', '.join(holders)})" if holders and first > committed
             else f"which the spool already has ({', '.join(holders)}) or delivered" if holders
             else "which were delivered already")
    if got.damage:
        return (f"{f.path.name}{got.problem} ({got.damage} bytes unreadable): holds only records {first} to "
                f"{last}, {where}: set aside, nothing lost")
    return f"{f.path.name}: holds only records {first} to {last}, {where}: a copy, set aside, not sent again"


def _keep(f: SegmentFile, data: bytes, got: Intact, after: int, committed: int, files: list[SegmentFile],
          notes: _Notes) -> tuple[Segment, list[int]]:
    """Keep the records of file ``f`` above ``after`` (those below are held by a segment before it), with the
    ones it lost between them taken from any other file that holds them intact; rewrite it if that changes
    anything, moving it into ``quarantine/`` first if it is damaged. Returns the segment and its numbers."""
    chunks = {r.number: data[r.start : r.end] for r in got.records if r.number > after}
    numbers = sorted(chunks)
    rewrite = bool(got.damage) or len(numbers) != len(got.records)
    wanted = [n for n in range(max(after, committed) + 1, numbers[-1]) if n not in chunks] if numbers else []
    borrowed = borrow(files, f, wanted)
    chunks.update((n, raw) for n, (raw, _) in borrowed.items())
    numbers = sorted(chunks)
    rewrite = rewrite or bool(borrowed)
    path = f.path
    tmp = path.with_name(path.name + ".tmp")
    if numbers and rewrite:  # the clean copy first, durable, while the file it replaces is still in place
        # mode 0600 like every segment: the records are whole signed events
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            out.write(b"".join([wal.MAGIC, *(chunks[n] for n in numbers)]))
            out.flush()
            os.fsync(out.fileno())
    if got.damage:
        taken = ""
        if borrowed:
            sources = sorted({name for _, name in borrowed.values()})
            taken = f"; {len(borrowed)} taken from {', '.join(sources)}"
        # linked aside while a clean copy is to replace it: a crash between the two finds the original still in
        # place (and salvages it again), never neither
        notes.quarantine(path, f"{path.name}{got.problem} ({got.damage} bytes unreadable, {len(numbers)} records "
                               f"kept{taken})", got.damage, keep=bool(numbers and rewrite))
    if numbers and rewrite:
        os.replace(tmp, path)
        fsync_dir(path.parent)
    seg = Segment(f.base, path, count=len(numbers), last=numbers[-1] if numbers else 0)
    seg.size = len(wal.MAGIC) + sum(len(c) for c in chunks.values())
    notes.hold(path.name, numbers)
    return seg, numbers


def first_undelivered(seg: Segment, committed: int) -> int:
    """Offset of the first record above ``committed`` in ``seg``; sets ``seg.read`` to the ones before it."""
    data = seg.path.read_bytes()
    parsed = wal.parse(data, len(wal.MAGIC))
    skipped = 0
    for r in parsed.records:
        if r.number > committed:
            break
        skipped += 1
    seg.read = skipped
    return parsed.records[skipped].start if skipped < len(parsed.records) else len(data)


def close_gap(seg: Segment, base: int, *, sync: bool = True) -> None:
    """Rename ``seg`` to start right after the records kept before it: a gap is reported by the scan that
    finds it, not again at each start or reload while undelivered records lie before it. ``sync``: make the
    rename durable now (else the caller has it done later, off the event loop)."""
    dest = seg.path.with_name(f"{base:020d}.wal")
    os.replace(seg.path, dest)
    if sync:
        fsync_dir(dest.parent)
    seg.base, seg.path = base, dest


def salvage(directory: Path, committed: int, cursor_damaged: bool = False,
            set_apart: Sequence[tuple[str, str]] = ()) -> Salvaged:
    """Scan ``directory``'s segments given the cursor; see the module docstring. ``set_apart``: the spool's own
    entries already moved aside, as (problem, where to)."""
    notes = _Notes()
    for problem, dest in set_apart:
        notes.problems.append(problem)
        notes.quarantined.append(dest)
    if cursor_damaged:
        notes.problems.append("cursor damaged: every intact record will be sent again")
    for tmp in directory.glob("*.wal.tmp"):
        if (kind := not_a_file(tmp)) not in (None, "symbolic link"):
            notes.quarantine(tmp, f"{tmp.name}: not a file (a {kind})", 0)
            continue
        tmp.unlink(missing_ok=True)  # an interrupted rewrite; the original is still there
    names = []
    for p in directory.iterdir():
        if (m := SEGMENT.match(p.name)) is None:
            continue
        if (kind := not_a_file(p)) is not None:  # not the spool's: set aside, never read (a FIFO would block)
            notes.quarantine(p, f"{p.name}: not a spool segment (a {kind})", 0)
            continue
        names.append((int(m.group(1)), p))
    kept: list[Segment] = []
    last = delivered = 0
    #: the last index the file before accounts for; None when it was damaged (its problem says what was lost)
    held: int | None = None
    #: the damaged segment before this one: (its base, the record numbers it still holds, its name)
    hurt: tuple[int, list[int], str] | None = None
    #: the last record number the files kept so far hold (None before the first)
    end: int | None = None
    #: segments to rename once the loss is reported: (segment, the base that closes the gap before it)
    gaps: list[tuple[Segment, int]] = []
    files = survey(names)
    for f in files:
        data = f.path.read_bytes()
        got = intact(data)
        if (copy := _copy_problem(f, got, committed, notes)) is not None:
            # records it holds are all accounted for elsewhere: nothing lost, nothing to send twice
            notes.problems.append(copy)
            notes.quarantined.append(set_aside(f.path))
            notes.corrupt_bytes += got.damage
            notes.duplicates += 0 if got.damage else len(got.records)
            continue
        if not got.segment:  # not a segment, only named like one: it tells nothing of lost records
            notes.quarantine(f.path, f"{f.path.name}: not a spool segment", got.damage)
            continue
        if not got.damage and not [r for r in got.records if r.number > last]:
            # empty, or a header alone: holds nothing, and its name tells nothing either (a crash right after
            # a new segment was made leaves one named after the last record)
            f.path.unlink(missing_ok=True)
            continue
        seg, numbers = _keep(f, data, got, last, committed, files, notes)
        del data
        base, path, damaged, first_number = f.base, f.path, bool(got.damage), numbers[0] if numbers else 0
        # the records lost before it end where its name or its first record begins (renamed ahead: its records;
        # a name at or before the records kept before it tells nothing either: its records do)
        upto = base
        if first_number and (first_number < base or (held is not None and base <= held)):
            upto = first_number
        if held is not None and held + 1 < upto and upto - 1 > committed:
            first = max(held + 1, committed + 1)
            notes.missing += upto - first
            what = f"record {first}" if first == upto - 1 else f"records {first} to {upto - 1}"
            notes.problems.append(f"{what} lost: no segment holds them (a segment removed, or cut short)")
        if hurt is not None:  # it should have held every record up to this segment's first
            notes.damaged += notes.lost_in(hurt[0], upto - 1, committed, hurt[2])
        hurt = (upto, numbers, path.name) if damaged else None
        held = None if hurt is not None else (seg.last if seg.count else base - 1)
        last = max(last, seg.last)
        if seg.count == 0 or seg.last <= committed:
            delivered += seg.count
            path.unlink(missing_ok=True)
            continue
        # named after its first record (renamed ahead, or the next after a gap), or before the records of the one
        # before it (put back under an earlier name): named to follow what is before it
        if (to := end + 1 if end is not None else first_number) < base or (end is not None and base < to):
            gaps.append((seg, to))
        end = seg.last
        kept.append(seg)
    if hurt is not None and hurt[1]:  # the last segment: what it lost before its last intact record
        notes.damaged += notes.lost_in(hurt[0], hurt[1][-1], committed, hurt[2])
    read_seg, read_off = (kept[0], first_undelivered(kept[0], committed)) if kept else (None, 0)
    skipped = read_seg.read if read_seg is not None else 0
    pending = sum(s.count for s in kept) - skipped
    report = SalvageReport(len(kept), pending, delivered + skipped, notes.corrupt_bytes, notes.missing,
                           tuple(notes.quarantined), tuple(notes.problems), notes.damaged, notes.duplicates)
    taken = {seg.base for seg in kept}  # never renamed over another segment (files renamed by hand both ways)
    return Salvaged(kept, report, read_seg, read_off, last, [(seg, b) for seg, b in gaps if b not in taken])
