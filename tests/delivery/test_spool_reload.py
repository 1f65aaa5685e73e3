"""A spool shared across a reload: what the old generation's sink took and never confirmed is sent by the new one,
and never counted as delivered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from agent.config import ListenerOptions
from agent.model import Event
from agent.pipeline.spool import Spool
from agent.pipeline.spoolqueue import SpoolQueue
from agent.pipeline.stats import PipelineStats
from agent.pipeline.worker import SinkWorker
from agent.receiver import MemoryDeliver, Receiver
from agent.sinks.base import SinkContext
from agent.sinks.socket import SocketOptions, UnixSink


def ev(i: int) -> Event:
    body = orjson.dumps({"specversion": "1.0", "id": f"e-{i}", "source": "guest://vm", "type": "t", "data": {"i": i}})
    return Event(f"e-{i}", "guest://vm", "t", i, body)


async def _drained(worker: asyncio.Future[None], deadline: float = 0.5) -> None:
    """What the agent's drain does: the worker gets until the deadline, then is cancelled (its last flush is
    still attempted, bounded)."""
    await asyncio.wait({worker}, timeout=deadline)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)


def test_what_the_old_sink_took_without_confirming_is_sent_by_the_new_one(tmp_path: Path) -> None:
    down = tmp_path / "down.sock"
    options = SocketOptions(send_timeout=0.2, ack_timeout=0.2, backoff_initial=0.01, backoff_max=0.05)

    async def main() -> tuple[list[str], int, int]:
        spool = Spool.shared(tmp_path / "spool", fsync="never")
        old_q = SpoolQueue(spool)
        await old_q.put_many([ev(i) for i in range(20)])
        old = SinkWorker(UnixSink(str(down), options, SinkContext()), old_q, PipelineStats().sink("old"),
                         flush_interval=0.05)
        running = asyncio.ensure_future(old.run())
        while spool.outstanding < 20:  # the old sink took them all (nobody acks: the downstream is down)
            await asyncio.sleep(0.01)
        new_q = SpoolQueue(Spool.shared(tmp_path / "spool"))  # the reload's new generation, built meanwhile
        new = SinkWorker(UnixSink(str(down), options, SinkContext()), new_q, PipelineStats().sink("new"),
                         flush_interval=0.05)
        old_q.close()
        await _drained(running)  # its last flush failed: nothing confirmed
        await old_q.aclose()
        got = MemoryDeliver()
        rx = asyncio.ensure_future(Receiver.build(ListenerOptions(uri=f"unix:{down}"), got).serve())
        running = asyncio.ensure_future(new.run())
        while len(got.got) < 20:
            await asyncio.sleep(0.01)
        new_q.close()
        await asyncio.wait_for(running, 20)
        committed = spool.committed
        await new_q.aclose()
        rx.cancel()
        await asyncio.gather(rx, return_exceptions=True)
        return got.ids(), committed, old.unconfirmed

    ids, committed, unconfirmed = asyncio.run(asyncio.wait_for(main(), 60))
    assert sorted(ids, key=lambda i: int(i[2:])) == [f"e-{i}" for i in range(20)]
    assert committed == 20 and unconfirmed >= 1


def test_a_new_reader_with_nothing_to_send_does_not_commit_what_it_never_sent(tmp_path: Path) -> None:
    """The stop right after such a reload: the new worker flushes at its end; the cursor must stay put."""
    down = tmp_path / "down.sock"
    options = SocketOptions(send_timeout=0.2, ack_timeout=0.2, backoff_initial=0.01, backoff_max=0.05)

    async def main() -> int:
        spool = Spool.shared(tmp_path / "spool", fsync="never")
        old_q = SpoolQueue(spool)
        await old_q.put_many([ev(i) for i in range(5)])
        old = SinkWorker(UnixSink(str(down), options, SinkContext()), old_q, PipelineStats().sink("old"))
        running = asyncio.ensure_future(old.run())
        while spool.outstanding < 5:
            await asyncio.sleep(0.01)
        new_q = SpoolQueue(Spool.shared(tmp_path / "spool"))
        new = SinkWorker(UnixSink(str(down), options, SinkContext()), new_q, PipelineStats().sink("new"))
        old_q.close()
        await _drained(running)
        await old_q.aclose()
        new_q.close()  # stopped at once: the downstream is still down
        await _drained(asyncio.ensure_future(new.run()))
        committed = spool.committed
        await new_q.aclose()
        return committed

    assert asyncio.run(asyncio.wait_for(main(), 60)) == 0
    again = Spool(tmp_path / "spool")
    assert again.pending == 5  # all still there for the next start
    again.close()
