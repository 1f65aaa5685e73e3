"""A sink worker stopped with events it never had confirmed fails their receipts: their senders send them again.

Left pending, a receipt would keep its guest's connection waiting (with heartbeat acks that never advance) and,
through the receiver's duplicate window, every later copy of the same events with it: after a reload with the
downstream down, those events could never be acknowledged again until a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import pytest

from agent.errors import SinkError
from agent.model import Event
from agent.pipeline import PipelineStats, SinkQueue, SinkWorker
from agent.pipeline.queue import Receipt
from agent.sinks.memory import MemorySink


def _event(i: int) -> Event:
    return Event(f"e-{i}", "src", "t", i, b'{"id":"e-%d"}' % i)


class _Down(MemorySink):
    """A downstream that never confirms: sends hang (``hang``) or every flush fails."""

    def __init__(self, hang: bool) -> None:
        super().__init__()
        self.hang = hang

    async def send(self, batch: Sequence[Event]) -> None:
        if self.hang:
            await anyio.sleep_forever()
        await super().send(batch)

    async def flush(self) -> None:
        raise SinkError("memory: no ack")


@pytest.mark.parametrize("hang", [True, False], ids=["stuck-in-send", "flush-never-confirms"])
def test_receipts_of_what_a_stopped_worker_never_confirmed_fail(hang: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.pipeline import worker as worker_mod

    monkeypatch.setattr(worker_mod, "CLOSE_TIMEOUT", 0.2)

    async def main() -> list[BaseException | None]:
        q = SinkQueue(100)
        w = SinkWorker(_Down(hang), q, PipelineStats().sink("down"), batch_max=3, flush_interval=0.05)
        receipts = [Receipt(1) for _ in range(8)]
        for i, r in enumerate(receipts):
            q.put_nowait(_event(i), r)
        task = asyncio.ensure_future(w.run())
        await asyncio.sleep(0.3)  # taken, being sent or flushed, or still queued
        task.cancel()  # what a reload or a shutdown past its deadline does
        await asyncio.gather(task, return_exceptions=True)
        assert w.finished and len(q) == 0
        return [r.future.exception() if r.future.done() else None for r in receipts]

    outcomes = asyncio.run(asyncio.wait_for(main(), 30))
    assert all(isinstance(e, SinkError) and "stopped before confirming" in str(e) for e in outcomes), outcomes
