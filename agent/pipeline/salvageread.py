"""Reading the files a start-up salvage finds: each file's intact records, the order the files go in, and
which other file holds a record intact.

A record intact in any file is present: :func:`borrow` fetches records a damaged segment lost from the files
that still hold them (a copy, a backup put back), so that only records no file holds intact are lost.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import wal

__all__ = ["Intact", "SegmentFile", "borrow", "intact", "survey"]


@dataclass(frozen=True, slots=True)
class Intact:
    """What one segment file's bytes hold."""

    #: the intact records, each numbered above the one before
    records: list[wal.Record]
    #: bytes that are no intact record
    damage: int = 0
    #: where the first damage is and what it is (``@offset: what``), "" without damage
    problem: str = ""
    #: False: no segment header and no intact record, not a spool segment
    segment: bool = True


def intact(data: bytes) -> Intact:
    """The intact records of a segment file's ``data``: parsing resumes after damage at the next offset where an
    intact record with a higher number begins."""
    if not data:
        return Intact([])
    pos, damage, problem = len(wal.MAGIC), 0, ""
    if not data.startswith(wal.MAGIC):
        # a damaged header, or not a segment at all: only intact records (each has its CRC) tell them apart
        nxt = wal.resync(data, -1)
        if nxt is None:
            return Intact([], len(data), "", segment=False)
        pos, damage, problem = nxt, nxt, "@0: damaged segment header"
    good: list[wal.Record] = []
    after = 0
    while True:
        parsed = wal.parse(data, pos, after=after)
        good.extend(parsed.records)
        if parsed.records:
            after = parsed.records[-1].number
        if parsed.status == "end":
            return Intact(good, damage, problem)
        problem = problem or f"@{parsed.stop}: {parsed.problem}"
        nxt = wal.resync(data, parsed.stop, after=after)
        damage += (nxt if nxt is not None else len(data)) - parsed.stop
        if nxt is None:
            return Intact(good, damage, problem)
        pos = nxt


@dataclass(slots=True)
class SegmentFile:
    """A file named like a segment, as found at start."""

    base: int
    path: Path
    #: the number of its first intact record (``base`` when it holds none)
    first: int
    #: the runs of record numbers it holds intact, in order: (first, last)
    runs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def genuine(self) -> bool:
        """Named by its first record's index, as the spool names a segment (else a copy or a renamed file)."""
        return self.base == self.first

    def holds(self, n: int) -> bool:
        i = bisect.bisect_right(self.runs, n, key=lambda run: run[0]) - 1
        return i >= 0 and self.runs[i][0] <= n <= self.runs[i][1]


def survey(names: Sequence[tuple[int, Path]]) -> list[SegmentFile]:
    """The files in the order of their records: by the first intact record's number, then the file named by
    that number first (the spool names a segment by its first record: that one is the segment, one under
    another name holding the same records a copy), then by name."""
    files = []
    for base, path in names:
        runs: list[tuple[int, int]] = []
        for r in intact(path.read_bytes()).records:
            if runs and runs[-1][1] + 1 == r.number:
                runs[-1] = (runs[-1][0], r.number)
            else:
                runs.append((r.number, r.number))
        files.append(SegmentFile(base, path, runs[0][0] if runs else base, runs))
    files.sort(key=lambda f: (f.first, not f.genuine, f.base))
    return files


def borrow(files: Sequence[SegmentFile], me: SegmentFile, wanted: Sequence[int]) -> dict[int, tuple[bytes, str]]:
    """The records numbered ``wanted`` that files other than ``me`` hold intact: number -> (the record's bytes,
    the name of the file it came from)."""
    out: dict[int, tuple[bytes, str]] = {}
    for f in files:
        need = {n for n in wanted if n not in out and f.holds(n)} if f is not me else set()
        if not need:
            continue
        try:
            data = f.path.read_bytes()
        except FileNotFoundError:  # set aside or removed already: it holds nothing still wanted
            continue
        for r in intact(data).records:
            if r.number in need:
                out[r.number] = (data[r.start : r.end], f.path.name)
    return out
