"""Reading one segment's events file line by line, tolerant of a writer that compresses it meanwhile."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

from . import layout

__all__ = ["SegmentEvents"]


class SegmentEvents:
    """The lines of one events file, consumed on demand.

    The file is opened at once, trying the plain name and then the compressed one: a live
    writer may compress a closed segment between the directory listing and this read.
    """

    def __init__(self, candidates: list[Path]) -> None:
        self.name = candidates[0].name if candidates else "(no events file)"
        self._it: Iterator[bytes] = iter(())
        self.lineno = 0
        self.bytes = 0
        self.sha = hashlib.sha256()
        self.torn = b""
        self.error: str | None = None
        self.done = False
        #: no candidate exists
        self.missing = True
        for path in candidates:
            try:
                self._it = layout.iter_lines(path)
                first = next(self._it, None)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.error, self.missing = str(exc), False
                break
            self.name, self.missing = path.name, False
            if first is not None:
                self._it = itertools.chain((first,), self._it)
            break

    def next(self) -> bytes | None:
        if self.done:
            return None
        try:
            line = next(self._it)
        except StopIteration:
            line = b""
        except OSError as exc:
            self.error, line = str(exc), b""
        if not line:
            self.done = True
            return None
        self.sha.update(line)
        self.bytes += len(line)
        if not line.endswith(b"\n"):
            self.torn, self.done = line, True
            return None
        self.lineno += 1
        return line[:-1]
