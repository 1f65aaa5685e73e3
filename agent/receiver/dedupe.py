"""A bounded window of recently taken ``(channel, source, id)`` keys.

The channel is what stays of a peer across its reconnects (:func:`channel_of`):
one guest's events are never matched against another's, so a guest that sends
another's ``source`` and ids cannot get that guest's events dropped as copies.

A duplicate that arrives while its first copy is pending is settled only
when the first copy is. A first copy that failed or was dropped does not
count, so its re-sent copy is offered again rather than acked as taken.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..model import MAX_KEPT_NAME, bounded_name

__all__ = ["MAX_KEPT", "DedupeWindow", "Entry", "Key", "channel_of", "key_of", "taken"]

Key = tuple[str, str, str]

#: the longest ``source`` and ``id`` kept as they are in the window (longer ones as their digest)
MAX_KEPT = MAX_KEPT_NAME


def key_of(channel: str, source: str, ident: str) -> Key:
    """The window's key of an event: its channel, source and id (see :func:`~agent.model.bounded_name`)."""
    return channel, bounded_name(source), bounded_name(ident)


def channel_of(peer: str) -> str:
    """The part of a ``hostpeer`` that survives the peer's reconnects and restarts.

    ``unix:uid=U,pid=P`` -> ``unix:uid=U`` (a restarted sender has a new pid); ``vsock:CID`` and a
    Firecracker socket's name are kept whole.
    """
    if peer.startswith("unix:"):
        return "unix:" + ",".join(p for p in peer[5:].split(",") if not p.startswith("pid="))
    return peer


#: what a lookup answers for a key: None when the first copy was taken, else its pending delivery future and
#: where in that future's answer the copy's own is (-1: the future answers for this copy alone)
Entry = tuple["asyncio.Future[Any]", int] | None


class _Batch:
    """Copies delivered together: one record shared by all their keys (nothing is made per key)."""

    __slots__ = ("future", "index", "keys", "single")

    def __init__(self, keys: Sequence[Key], fut: asyncio.Future[Any], single: bool) -> None:
        self.future = fut
        self.keys = keys
        self.single = single
        self.index: dict[Key, int] | None = None

    def position(self, key: Key) -> int:
        if self.single:
            return -1
        if self.index is None:  # only a copy of a pending or dropped event gets here: rare
            self.index = {k: i for i, k in enumerate(self.keys)}
        return self.index[key]


class DedupeWindow:
    """Keys of first copies, oldest first, bounded; a record's fate is read when a copy turns up.

    A key maps to None (taken for certain) or to the record of the delivery that carried it. The record is
    not updated when that delivery completes: a lookup reads the outcome then, so taking a batch costs one
    dictionary store per key and nothing more. A copy whose first delivery failed or was dropped is treated
    as new (and its key is given to the new delivery).
    """

    __slots__ = ("entries", "size")

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        #: key -> None or the record of its delivery (read directly on the receiver's hot path)
        self.entries: OrderedDict[Key, _Batch | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: Key) -> bool:
        try:
            self.get(key)
        except KeyError:
            return False
        return True

    def get(self, key: Key) -> Entry:
        """The first copy's ``(future, position)`` while it is pending, None once taken; KeyError when new
        (or when the first copy failed or was dropped)."""
        return self.resolve(key, self.entries[key])

    def resolve(self, key: Key, record: _Batch | None) -> Entry:
        """What ``record`` (the value stored for ``key``) says now; KeyError when the copy counts as new."""
        if record is None:
            return None
        fut = record.future
        pos = record.position(key)
        if not fut.done():
            return fut, pos
        if taken(fut, pos):
            return None
        raise KeyError(key)

    def add(self, key: Key, fut: asyncio.Future[Any]) -> None:
        """One copy whose delivery is ``fut`` alone."""
        self.add_many((key,), fut, single=True)

    def add_many(self, keys: Sequence[Key], fut: asyncio.Future[Any], *, single: bool = False) -> None:
        """Copies delivered together: ``fut`` answers for all (see :func:`taken`), ``keys`` in its order."""
        if self.size <= 0 or not keys:
            return
        entries = self.entries
        record = _Batch(keys, fut, single)
        before = len(entries)
        for key in keys:
            entries[key] = record
        if len(entries) - before != len(keys):  # some were known (a copy sent again): they are new now
            for key in keys:
                entries.move_to_end(key)
        n = len(entries) - self.size
        for _ in range(n):
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
