"""File names of an archive directory, listing them, and reading segment lines. No writes.

An archive directory holds, for each segment number ``N`` (1, 2, ...):

- ``seg-NNNNNNNN.ndjson`` (or ``.ndjson.gz`` once closed and compressed): the events,
  one per line, exactly as they were emitted;
- ``seg-NNNNNNNN.log``: the segment's records (open, checkpoints, cuts, close,
  retention), one signed JSON object per line;

plus ``archive.lock``, held by the one writer. Numbers have at least 8 digits.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArchiveError

__all__ = [
    "EVENTS",
    "GZ",
    "LOCK",
    "LOG",
    "ArchiveError",
    "Listing",
    "events_path",
    "gz_path",
    "iter_lines",
    "log_path",
    "read_events",
    "scan",
    "seg_stem",
    "split_tail",
]


LOCK = "archive.lock"
EVENTS = ".ndjson"
GZ = ".ndjson.gz"
LOG = ".log"
TMP = ".tmp"
_NAME = re.compile(r"seg-(\d{8,})(\.ndjson|\.ndjson\.gz|\.log)\Z")


def seg_stem(n: int) -> str:
    return f"seg-{n:08d}"


def events_path(root: Path, n: int) -> Path:
    return root / f"{seg_stem(n)}{EVENTS}"


def gz_path(root: Path, n: int) -> Path:
    return root / f"{seg_stem(n)}{GZ}"


def log_path(root: Path, n: int) -> Path:
    return root / f"{seg_stem(n)}{LOG}"


@dataclass(slots=True)
class Listing:
    """What an archive directory holds, by kind."""

    logs: dict[int, Path] = field(default_factory=dict)
    events: dict[int, Path] = field(default_factory=dict)
    gz: dict[int, Path] = field(default_factory=dict)
    tmp: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)

    def numbers(self) -> list[int]:
        return sorted({*self.logs, *self.events, *self.gz})

    def segment_bytes(self, n: int) -> int:
        total = 0
        for table in (self.logs, self.events, self.gz):
            p = table.get(n)
            if p is not None:
                try:
                    total += p.stat().st_size
                except FileNotFoundError:
                    pass
        return total


def scan(root: Path) -> Listing:
    """Classify the entries of an archive directory (non-canonical names land in ``other``)."""
    out = Listing()
    with os.scandir(root) as it:
        for entry in it:
            name = entry.name
            if name == LOCK:
                continue
            path = Path(entry.path)
            if name.endswith(TMP) and name.startswith("seg-"):
                out.tmp.append(path)
                continue
            m = _NAME.match(name)
            if m is None or not entry.is_file(follow_symlinks=False):
                out.other.append(path)
                continue
            n = int(m.group(1))
            if seg_stem(n) != name[: -len(m.group(2))]:
                out.other.append(path)
                continue
            {EVENTS: out.events, GZ: out.gz, LOG: out.logs}[m.group(2)][n] = path
    out.other.sort()
    return out


def split_tail(data: bytes) -> tuple[bytes, bytes]:
    """``(complete lines, torn tail)``: everything up to the last newline, and what follows it."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def read_events(path: Path) -> bytes:
    """The uncompressed bytes of a segment's events file (plain or gzip)."""
    if path.name.endswith(GZ):
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def iter_lines(path: Path) -> Iterator[bytes]:
    """Lines of a plain or gzip segment, each with its newline (the last may lack one).

    Raises ``OSError`` (a gzip member that does not decompress is reported as one).
    """
    opener = gzip.open if path.name.endswith(GZ) else open
    try:
        with opener(path, "rb") as f:
            yield from f
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise OSError(f"{path.name}: does not decompress: {exc}") from None
