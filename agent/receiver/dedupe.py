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
from collections.abc import Sequence
from typing import Any

__all__ = ["DedupeWindow", "Entry", "Key", "channel_of", "taken"]

Key = tuple[str, str, str]


def channel_of(peer: str) -> str:
    """The part of a ``hostpeer`` that survives the peer's reconnects and restarts.

    ``unix:uid=U,pid=P`` -> ``unix:uid=U`` (a restarted sender has a new pid); ``vsock:CID`` and a
    Firecracker socket's name are kept whole.
    """
    if peer.startswith("unix:"):
        return "unix:" + ",".join(p for p in peer[5:].split(",") if not p.startswith("pid="))
    return peer


#: what the window holds for a key: None once the first copy is taken, else its pending delivery future and
#: where in that future's answer the copy's own is (-1: the future answers for this copy alone)
Entry = tuple["asyncio.Future[Any]", int] | None


class DedupeWindow:
    __slots__ = ("entries", "size")

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        #: key -> entry, oldest first (read directly on the receiver's hot path; change through the methods)
        self.entries: OrderedDict[Key, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: Key) -> bool:
        return key in self.entries

    def get(self, key: Key) -> Entry:
        """The first copy's ``(future, position)`` while it is pending, None once taken; KeyError when new."""
        return self.entries[key]

    def add(self, key: Key, fut: asyncio.Future[Any]) -> None:
        """One copy whose delivery is ``fut`` alone."""
        self.add_many((key,), fut, single=True)

    def add_many(self, keys: Sequence[Key], fut: asyncio.Future[Any], *, single: bool = False) -> None:
        """Copies delivered together: ``fut`` answers for all (see :func:`taken`), ``keys`` in its order."""
        if self.size <= 0 or not keys:
            return
        entries = self.entries
        if fut.done():  # settled already: no callback needed
            for i, key in enumerate(keys):
                if taken(fut, -1 if single else i):
                    entries[key] = None
            self._trim()
            return
        for i, key in enumerate(keys):
            entries[key] = (fut, -1 if single else i)
        self._trim()

        def done(f: asyncio.Future[Any]) -> None:
            whole = not f.cancelled() and f.exception() is None and f.result() in (None, True)
            for key in keys:
                entry = entries.get(key)
                if entry is None or entry[0] is not f:
                    continue
                if whole or taken(f, entry[1]):
                    entries[key] = None
                else:
                    del entries[key]

        fut.add_done_callback(done)

    def _trim(self) -> None:
        entries = self.entries
        while len(entries) > self.size:
            entries.popitem(last=False)


def taken(f: asyncio.Future[Any], pos: int = -1) -> bool:
    """The copy was taken: not failed, not cancelled, and not refused or dropped (``False``).

    A future answering for several copies has a list as its result, with each copy's own answer at its
    position; any other result answers for all of them.
    """
    if f.cancelled() or f.exception() is not None:
        return False
    res = f.result()
    if pos >= 0 and type(res) is list:
        res = res[pos]
    return res is not False and not isinstance(res, BaseException)
