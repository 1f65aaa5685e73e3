"""Counting what the receiver takes and refuses, and logging each peer's trouble once.

Counts are by reason (a fixed set, :data:`~.validate.REASONS`). A log line is
written the first time a (peer, reason) pair occurs; later ones are counted
only. The memory of who was logged is a bounded LRU, so a stream of new peers
cannot grow it.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

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
                 logger: logging.Logger = log) -> None:
        self.stats = stats
        self.listener = listener
        self.max_peers = max_peers
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._log = logger

    def __call__(self, peer: str, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        # one line per channel: a unix peer's uid, not its pid (a guest that forks a sender per event is one)
        key = (channel_of(peer), reason)
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        self._seen[key] = None
        if len(self._seen) > self.max_peers:
            self._seen.popitem(last=False)
        self._log.warning("%s: refused from %s: %s: %s (further refusals of this kind from %s are only counted)",
                          self.listener, peer, reason, detail, key[0])
