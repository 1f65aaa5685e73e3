"""A fake pipeline side for the receiver: records what it is handed, settles it as told.

``MemoryDeliver()`` is a :data:`~.server.Deliver`: by default every event is
durable at once. ``hold`` keeps the futures pending (in ``held``) until the
test settles them; ``fail_ids`` makes delivery of those ids fail once;
``result = False`` reports events as dropped by an overflow policy.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["MemoryBatchDeliver", "MemoryDeliver"]


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


class MemoryBatchDeliver(MemoryDeliver):
    """The same, taking each read's new events as one batch (the receiver's ``many`` path).

    One future per batch: ``hold`` keeps it pending (in ``held``); ``fail_ids`` fails the whole batch once
    (nothing of it is recorded); ``answers`` (id -> True, False or an exception) gives single events of a
    batch their own answer, which makes the batch's result a list.
    """

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Any] = {}
        #: sizes of the batches taken, in order
        self.batches: list[int] = []
        #: what each held batch will answer (see :meth:`release`)
        self.held_answers: list[Any] = []

    def many(self, events: list[dict[str, Any]], hostpeer: str, frames: list[bytes] | None = None
             ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failing = [e["id"] for e in events if e["id"] in self.fail_ids]
        if failing:
            self.fail_ids.difference_update(failing)
            fut.set_exception(RuntimeError(f"sink is down ({failing[0]})"))
            return fut
        self.batches.append(len(events))
        self.got.extend((e, hostpeer) for e in events)
        answer: Any = None
        if self.result is not True or any(e["id"] in self.answers for e in events):
            answer = [self.answers.get(e["id"], self.result) for e in events]
        if self.hold:
            self.held.append(fut)
            self.held_answers.append(answer)
        else:
            fut.set_result(answer)
        return fut

    def release(self, i: int) -> None:
        """Settle held batch ``i`` with its answer."""
        self.held[i].set_result(self.held_answers[i])
