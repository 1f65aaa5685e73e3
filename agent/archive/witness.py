"""A note, outside the archive, of how far a writer has written it: the one thing the archive alone cannot show
is its newest segments removed while no writer had it (the next start would take the closed segment before them
for a crash in a rotation). The agent keeps it in its state directory (``archive-witness/``).

The note holds the archive's path, origin, newest segment and sealed size, written (atomically) at a writer's
start, rotation and clean stop; only what is durable in the archive by then, so a crash never leaves the note
ahead of the files.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SinkError

__all__ = ["Witness"]

log = logging.getLogger("hoststamp.sink")


@dataclass(frozen=True, slots=True)
class Witness:
    """The note at ``path`` of the archive at ``root``."""

    path: Path
    root: Path

    def check(self, origin: str, newest: int, size: int) -> None:
        """SinkError when the archive of ``origin`` now ends (``newest`` segment, ``size`` events) before what
        was written to it; an archive of another origin (started afresh) is logged, not refused."""
        seen = self._read()
        if seen is None:
            return
        if seen.get("origin") != origin:
            log.warning("%s: this host wrote archive %s here, up to segment %s; the directory now holds %s",
                        self.root, seen.get("origin"), seen.get("segment"), origin)
            return
        seg, was = seen.get("segment"), seen.get("size")
        if type(seg) is int and type(was) is int and (newest < seg or size < was):
            raise SinkError(f"{self.root}: this host wrote up to segment {seg} and {was} events here, and the "
                            f"archive now ends at segment {newest} with {size}: its newest part was removed; the "
                            f"archive was left as it is (check it with: hoststamp verify {self.root}; {self.path} "
                            "holds what was written)")

    def note(self, origin: str, segment: int, size: int) -> None:
        """What is durable in the archive now (a failure to write is logged: the check is only weaker)."""
        data = json.dumps({"root": str(self.root.resolve()), "origin": origin, "segment": segment,
                           "size": size}).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("%s: cannot note the archive's head in %s: %s", self.root, self.path, exc.strerror or exc)

    def _read(self) -> dict[str, object] | None:
        try:
            seen = json.loads(self.path.read_bytes())
        except (OSError, ValueError):  # none yet, or unreadable: nothing to hold the archive to
            return None
        return seen if isinstance(seen, dict) and seen.get("root") == str(self.root.resolve()) else None
