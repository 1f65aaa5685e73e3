"""A bounded window of recently taken ``(channel, source, id)`` keys.

The channel is what stays of a peer across its reconnects (:func:`channel_of`):
one guest's events are never matched against another's, so a guest that sends
another's ``source`` and ids cannot get that guest's events dropped as copies.

Each entry holds the delivery future of the first copy while it is pending
(``None`` once it is done), so a duplicate that arrives meanwhile is settled
only when the first copy is. A first copy that fails or is dropped leaves the
window, so its re-sent copy is offered again rather than acked as taken.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

__all__ = ["DedupeWindow", "Key", "channel_of"]

Key = tuple[str, str, str]


def channel_of(peer: str) -> str:
    """The part of a ``hostpeer`` that survives the peer's reconnects and restarts.

    ``unix:uid=U,pid=P`` -> ``unix:uid=U`` (a restarted sender has a new pid); ``vsock:CID`` and a
    Firecracker socket's name are kept whole.
    """
    if peer.startswith("unix:"):
        return "unix:" + ",".join(p for p in peer[5:].split(",") if not p.startswith("pid="))
    return peer


class DedupeWindow:
    __slots__ = ("_entries", "size")

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._entries: OrderedDict[Key, asyncio.Future[Any] | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def get(self, key: Key) -> asyncio.Future[Any] | None:
        """The first copy's future (done or not); raises KeyError when ``key`` is new."""
        return self._entries[key]

    def add(self, key: Key, fut: asyncio.Future[Any]) -> None:
        if self.size <= 0:
            return
        entries = self._entries
        if fut.done():  # settled already: no callback needed
            if _taken(fut):
                entries[key] = None
                if len(entries) > self.size:
                    entries.popitem(last=False)
            return
        entries[key] = fut
        if len(entries) > self.size:
            entries.popitem(last=False)

        def done(f: asyncio.Future[Any]) -> None:
            if entries.get(key) is not f:
                return
            if _taken(f):
                entries[key] = None
            else:
                del entries[key]

        fut.add_done_callback(done)


def _taken(f: asyncio.Future[Any]) -> bool:
    """The copy was taken: not failed, not cancelled, and not dropped (``False``) by an overflow policy."""
    return not f.cancelled() and f.exception() is None and f.result() is not False
