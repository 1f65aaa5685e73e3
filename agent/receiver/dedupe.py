"""A bounded window of recently taken ``(source, id)`` pairs.

Each entry holds the delivery future of the first copy while it is pending
(``None`` once it is done), so a duplicate that arrives meanwhile is settled
only when the first copy is. A first copy that fails leaves the window, so
its re-sent copy is taken again rather than dropped.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

__all__ = ["DedupeWindow", "Key"]

Key = tuple[str, str]


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
            if not fut.cancelled() and fut.exception() is None:
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
            if f.cancelled() or f.exception() is not None:
                del entries[key]
            else:
                entries[key] = None

        fut.add_done_callback(done)
