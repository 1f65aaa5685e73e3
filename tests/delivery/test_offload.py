"""What the threaded and worker pipelines share: a batch counts as drained once its events are in the queues."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from agent import _native
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.offload import OffloadPipeline
from agent.pipeline.parallel import ParallelPipeline
from agent.pipeline.threaded import ThreadedPipeline
from agent.signing.keys import SigningKey
from agent.sinks.memory import MemorySink


def _pipeline(kind: str, q: SinkQueue) -> OffloadPipeline[Any]:
    st = Stamper(SigningKey.generate(), "h", SequenceStore(None))
    if kind == "threads":
        if _native.Signer is None:
            pytest.skip("the native signer is not built here")
        return ThreadedPipeline(st, [q], PipelineStats())
    return ParallelPipeline(st, [q], PipelineStats(), workers=1)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["threads", "workers"])
async def test_drain_waits_until_the_events_are_in_the_queues(kind: str) -> None:
    q = SinkQueue(4, "block")  # room for 4 of the batch's 10 until a sink takes them
    pipeline = _pipeline(kind, q)
    events = [{"specversion": "1.0", "id": f"e{i}", "source": "vm/1", "type": "t", "data": {"i": i}}
              for i in range(10)]
    sink = MemorySink()
    try:
        with anyio.fail_after(60):
            await pipeline.start()
            answer = await pipeline.submit_guests(events, "vsock:3")
            assert await pipeline.drain(1.0) is False  # signed, but 6 events still wait for room in the queue
            async with anyio.create_task_group() as tg:
                tg.start_soon(SinkWorker(sink, q, pipeline.stats.sink("m"), flush_interval=0.01).run)
                assert await pipeline.drain(30) is True
                assert await answer.future is None
                tg.cancel_scope.cancel()
    finally:
        await pipeline.aclose()
        pipeline.close()
    assert [e.id for e in sink.events] == [f"e{i}" for i in range(10)]
