from __future__ import annotations

import anyio
import pytest

from agent.model import Event
from agent.pipeline.queue import Receipt, SinkQueue


def ev(n: int) -> Event:
    return Event(id=str(n), source="s", type="t", sequence=n, body=b"{}")


@pytest.mark.anyio
async def test_drop_newest_counts() -> None:
    q = SinkQueue(2, "drop_newest")
    assert [await q.put(ev(i)) for i in range(4)] == [True, True, False, False]
    assert q.dropped == {"queue_full": 2}
    assert [e.id for e, _ in await q.get_batch(10)] == ["0", "1"]


@pytest.mark.anyio
async def test_drop_oldest_counts_and_keeps_newest() -> None:
    q = SinkQueue(2, "drop_oldest")
    for i in range(5):
        assert await q.put(ev(i))
    assert q.dropped == {"evicted": 3}
    assert [e.id for e, _ in await q.get_batch(10)] == ["3", "4"]


@pytest.mark.anyio
async def test_block_waits_for_room_and_loses_nothing() -> None:
    q = SinkQueue(3, "block")
    got: list[str] = []

    async def consumer() -> None:
        while True:
            batch = await q.get_batch(2)
            if not batch:
                return
            got.extend(e.id for e, _ in batch)
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        for i in range(50):
            await q.put(ev(i))
            assert len(q) <= 3
        q.close()
    assert got == [str(i) for i in range(50)] and q.dropped == {}


@pytest.mark.anyio
async def test_receipts_report_drops() -> None:
    q = SinkQueue(1, "drop_newest")
    r1, r2 = Receipt(1), Receipt(1)
    await q.put(ev(1), r1)
    await q.put(ev(2), r2)
    assert await r2.wait() is False
    (_e, r), = await q.get_batch(5)
    assert r is r1


@pytest.mark.anyio
async def test_closed_queue_refuses_and_drains() -> None:
    q = SinkQueue(4)
    await q.put(ev(1))
    q.close()
    assert await q.put(ev(2)) is False and q.dropped == {"closed": 1}
    assert len(await q.get_batch(5)) == 1
    assert await q.get_batch(5) == []


@pytest.mark.anyio
@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
async def test_every_event_routed_is_counted_enqueued_and_the_counts_add_up(overflow: str) -> None:
    q = SinkQueue(3, overflow)  # type: ignore[arg-type]
    await q.put_many([ev(i) for i in range(5)])
    for i in range(5, 8):
        await q.put(ev(i))
    sent = len(await q.get_batch(2))
    q.close()
    await q.put(ev(99))  # after the close: routed here, dropped as closed
    assert q.enqueued == 9
    assert q.enqueued == sent + sum(q.dropped.values()) + len(q)
