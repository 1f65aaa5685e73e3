"""The archive's knobs: one frozen dataclass, also the ``archive:`` sink's ``[[sinks]]`` options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ArchiveOptions", "Compression", "FsyncPolicy"]

#: ``batch``: fsync the events after every batch; ``checkpoint``: fsync events and records before
#: every checkpoint, rotation and close (a checkpoint never covers data that is not on disk);
#: ``never``: leave it to the kernel
FsyncPolicy = Literal["batch", "checkpoint", "never"]
Compression = Literal["gzip", "none"]


@dataclass(frozen=True, slots=True)
class ArchiveOptions:
    """How an archive directory is written."""

    #: rotate the open segment once its events file reaches this many bytes
    segment_max_bytes: int = 64 << 20
    #: rotate a non-empty segment this many seconds after it was opened (0: never by age)
    segment_max_age: float = 86400.0
    #: sign a checkpoint after this many new events ...
    checkpoint_every: int = 10000
    #: ... or this many seconds after the last one, whichever comes first
    checkpoint_interval: float = 5.0
    fsync: FsyncPolicy = "checkpoint"
    #: compress closed segments
    compression: Compression = "gzip"
    #: remove the oldest closed segments while the archive is larger than this (0: no limit)
    retain_bytes: int = 0
    #: remove closed segments closed more than this many seconds ago (0: keep forever)
    retain_age: float = 0.0
    #: the log identity in checkpoints; default for a new archive: ``hoststamp/<keyid[:16]>/<random>``
    origin: str | None = None

    def __post_init__(self) -> None:
        if self.segment_max_bytes < 1:
            raise ValueError("segment_max_bytes must be at least 1")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if self.checkpoint_interval <= 0:
            raise ValueError("checkpoint_interval must be greater than 0")
        for name in ("segment_max_age", "retain_age", "retain_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.origin is not None and (not self.origin or "+" in self.origin
                                        or any(c.isspace() for c in self.origin)):
            raise ValueError("origin must be non-empty, without spaces or '+'")
