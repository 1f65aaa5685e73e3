"""What every watch shares: its options, its counters, and room for its file descriptors."""

from __future__ import annotations

import resource
from dataclasses import dataclass

__all__ = ["WatchOptions", "WatchStats", "ensure_nofile"]


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """Keys every ``[probes.NAME.watch]`` table has."""

    enabled: bool = True
    #: seconds: one change reading per watched thing at most this often; a burst is folded into it with a count
    coalesce: float = 0.1

    def __post_init__(self) -> None:
        if self.coalesce < 0:
            raise ValueError("coalesce must be 0 or more")


def ensure_nofile(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` (never past the hard limit); the soft limit after.

    Every watched file holds an fd, and services often start with a soft
    limit of 1024. The loop uses epoll, never select(), so more fds are safe.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want
        except (OSError, ValueError):
            pass
    return soft


@dataclass(slots=True)
class WatchStats:
    """Counters of one source (for status lines and tests)."""

    watches: int = 0
    peak: int = 0
    refused: int = 0
    notifications: int = 0
    firings: int = 0
    readings: int = 0
    dropped: int = 0
