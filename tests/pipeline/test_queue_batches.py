"""A batch into a sink queue: the same policies as one event at a time, and one receipt that knows which were lost."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model import Event
from agent.pipeline.queue import BatchReceipt, SinkQueue


def _events(n: int, tag: str = "e") -> list[Event]:
    return [Event(f"{tag}{i}", "s", "t", i + 1, b"{}") for i in range(n)]


def test_a_batch_that_fits_goes_in_whole_and_in_order() -> None:
    async def main() -> None:
        q = SinkQueue(10)
        evs = _events(4)
        r = BatchReceipt(evs, 1)
        await q.put_many(evs, r)
        got = await q.get_batch(100)
        assert [e.id for e, _ in got] == ["e0", "e1", "e2", "e3"] and all(x is r for _, x in got)
        assert q.enqueued == 4 and len(q) == 0
        for _ in got:
            r.done_one()
        assert await r.wait() is None  # every sink took every event

    asyncio.run(main())


def test_drop_newest_refuses_the_overflow_and_the_receipt_names_it() -> None:
    async def main() -> None:
        q = SinkQueue(3, "drop_newest")
        evs = _events(5)
        r = BatchReceipt(evs, 1)
        await q.put_many(evs, r)
        assert q.dropped == {"queue_full": 2}
        for _ in await q.get_batch(10):
            r.done_one()
        assert await r.wait() == [True, True, True, False, False]

    asyncio.run(main())


def test_drop_oldest_evicts_from_the_head_and_the_older_receipt_learns_it() -> None:
    async def main() -> None:
        q = SinkQueue(3, "drop_oldest")
        old = _events(2, "old")
        r_old = BatchReceipt(old, 1)
        await q.put_many(old, r_old)
        new = _events(3, "new")
        r_new = BatchReceipt(new, 1)
        await q.put_many(new, r_new)
        got = await q.get_batch(10)
        assert [e.id for e, _ in got] == ["new0", "new1", "new2"]
        assert q.dropped == {"evicted": 2}
        for _, r in got:
            r.done_one()
        assert await r_old.wait() == [False, False] and await r_new.wait() is None

    asyncio.run(main())


def test_block_waits_for_room_and_loses_nothing() -> None:
    async def main() -> None:
        q = SinkQueue(2, "block")
        evs = _events(5)
        r = BatchReceipt(evs, 1)
        put = asyncio.ensure_future(q.put_many(evs, r))
        seen: list[str] = []
        while len(seen) < 5:
            for e, rr in await q.get_batch(1):
                seen.append(e.id)
                assert rr is not None
                rr.done_one()
        await put
        assert seen == [f"e{i}" for i in range(5)] and q.blocked >= 1 and not q.dropped
        assert await r.wait() is None

    asyncio.run(main())


def test_a_closed_queue_drops_the_whole_batch() -> None:
    async def main() -> None:
        q = SinkQueue(10)
        q.close()
        evs = _events(2)
        r = BatchReceipt(evs, 1)
        await q.put_many(evs, r)
        assert q.dropped == {"closed": 2} and await r.wait() == [False, False]

    asyncio.run(main())


@settings(max_examples=200, deadline=None)
@given(sinks=st.integers(1, 3), data=st.data())
def test_progress_tells_how_many_of_the_first_events_every_sink_settled(sinks: int, data: st.DataObject) -> None:
    """Whatever the order sinks settle events in (taken, or dropped and told first), progress says, once the loop
    turns, how many of the first events every sink settled, only ever more, and never the whole batch (its
    future tells that)."""
    evs = _events(12)
    order = data.draw(st.permutations([i for i in range(12) for _ in range(sinks)]))
    drops = data.draw(st.sets(st.integers(0, len(order) - 1), max_size=4))

    async def main() -> None:
        r = BatchReceipt(evs, sinks)
        told: list[int] = []
        dropped: list[int] = []
        r.watch(lambda i, _why: dropped.append(i))
        r.progress(told.append)
        count = [0] * 12
        for step, i in enumerate(order):
            if step in drops:
                r.drop(evs[i])
                assert i in dropped  # told of the drop before it counts as settled
            else:
                r.done_one(evs[i])
            count[i] += 1
            await asyncio.sleep(0)  # told once the loop turns
            first = next((j for j in range(12) if count[j] < sinks), 12)
            if first == 0:
                assert not told
            elif first < 12:
                assert told[-1] == first
        assert r.future.done() and told == sorted(set(told)) and all(0 < n < 12 for n in told)

    after, BatchReceipt.PROGRESS_AFTER = BatchReceipt.PROGRESS_AFTER, 0  # told as the loop turns, for each step
    try:
        asyncio.run(main())
    finally:
        BatchReceipt.PROGRESS_AFTER = after
