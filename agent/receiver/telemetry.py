"""Counting what the receiver takes and refuses, and logging each peer's trouble once.

Counts are by reason (a fixed set, :data:`~.validate.REASONS`). A log line is
written the first time a (peer, reason) pair occurs; later ones are counted
only. The memory of who was logged is a bounded LRU, so a stream of new peers
cannot grow it, and the lines themselves are rate-limited
(:class:`~agent.logs.OncePerKey`), so a stream of new peers cannot flood the log; how many the rate held back
is said by the next line, or a second later when none comes, or when the listener closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..logs import LOG_EVERY, OncePerKey
from .dedupe import channel_of

__all__ = ["ReceiverStats", "RejectLog"]

log = logging.getLogger("agent.receiver")


@dataclass(slots=True)
class ReceiverStats:
    accepted: int = 0
    duplicates: int = 0
    #: taken, then dropped by a sink queue's overflow policy (acked as refused)
    dropped: int = 0
    connections: int = 0
    connections_open: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    #: whether the listener takes events now (a NATS listener: connected and consuming), and why not
    healthy: bool = True
    last_error: str | None = None


class RejectLog:
    def __init__(self, stats: ReceiverStats, *, listener: str, max_peers: int = 1024,
                 logger: logging.Logger = log, **kw: Any) -> None:
        self.stats = stats
        self.listener = listener
        self.max_peers = max_peers
        self.once = OncePerKey(logger, max_keys=max_peers, suffix="", **kw)
        self._flush_at: asyncio.TimerHandle | None = None
        self._every = float(kw.get("every", LOG_EVERY))

    def __call__(self, peer: str, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        # one line per channel: a unix peer's uid, not its pid (a guest that forks a sender per event is one)
        key = (channel_of(peer), reason)
        logged = self.once(key, "%s: refused from %s: %s: %s (further refusals of this kind from %s are only "
                           "counted)", self.listener, peer, reason, detail, key[0])
        if not logged and self.once.unlogged and self._flush_at is None:
            # held back by the rate: said by the next line, or in a while if no line comes
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_at = loop.call_later(self._every, self.flush)

    def flush(self) -> None:
        """Say now how many refusals the log's rate held back (the listener closes, or a while has passed)."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        self.once.flush()
