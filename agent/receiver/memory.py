"""A fake pipeline side for the receiver: records what it is handed, settles it as told.

``MemoryDeliver()`` is a :data:`~.server.Deliver`: by default every event is
durable at once. ``hold`` keeps the futures pending (in ``held``) until the
test settles them; ``fail_ids`` makes delivery of those ids fail once;
``result = False`` reports events as dropped by an overflow policy.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["MemoryDeliver"]


class MemoryDeliver:
    def __init__(self) -> None:
        self.got: list[tuple[dict[str, Any], str]] = []
        self.hold = False
        self.held: list[asyncio.Future[Any]] = []
        self.fail_ids: set[str] = set()
        self.result: Any = True

    def __call__(self, event: dict[str, Any], hostpeer: str) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if event["id"] in self.fail_ids:
            self.fail_ids.discard(event["id"])
            fut.set_exception(RuntimeError("sink is down"))
            return fut
        self.got.append((event, hostpeer))
        if self.hold:
            self.held.append(fut)
        else:
            fut.set_result(self.result)
        return fut

    def ids(self) -> list[str]:
        return [e["id"] for e, _ in self.got]
