"""Per-source sequence numbers that only go up, also across restarts.

The store reserves numbers in blocks and writes the reserved ceiling to
``sequences.json`` (atomically: temp file, fsync, rename) before handing out a
number above the previous ceiling, so a crash can only skip numbers, never
repeat one. A clean shutdown records the exact last number, so a normal restart
continues without a gap: a gap in a source's sequence means the agent died.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["SequenceStore"]

BLOCK = 4096


class SequenceStore:
    """``next(source)`` returns 1, 2, 3 ... per source; persisted when ``path`` is given."""

    def __init__(self, path: Path | None, *, block: int = BLOCK) -> None:
        self._path = path
        self._block = block
        self._last: dict[str, int] = {}
        self._ceiling: dict[str, int] = {}
        #: sources whose numbers resumed past a reservation: the previous run did not stop cleanly
        self.unclean = False
        if path is not None:
            self._load(path)
            self._save(clean=False)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            doc = {}
            self.unclean = True
        clean = bool(doc.get("clean", False))
        for source, entry in dict(doc.get("sources", {})).items():
            last, reserved = int(entry.get("last", 0)), int(entry.get("reserved", 0))
            start = last if clean else max(last, reserved)
            if not clean and reserved > last:
                self.unclean = True
            self._last[source] = start
            self._ceiling[source] = start

    def next(self, source: str) -> int:
        n = self._last.get(source, 0) + 1
        self._last[source] = n
        if n > self._ceiling.get(source, 0):
            self._ceiling[source] = n + self._block
            if self._path is not None:
                self._save(clean=False)
        return n

    def last(self, source: str) -> int:
        return self._last.get(source, 0)

    def close(self) -> None:
        """Record exact positions: the next start continues without a gap."""
        if self._path is not None:
            self._save(clean=True)

    def _save(self, *, clean: bool) -> None:
        assert self._path is not None
        doc = {
            "clean": clean,
            "sources": {
                s: {"last": self._last.get(s, 0), "reserved": self._last.get(s, 0) if clean else self._ceiling[s]}
                for s in self._ceiling
            },
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # a temp name of this process's own: two agents started on one state_dir must not rename each other's file
        tmp = self._path.with_name(f"{self._path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
