"""Events a sink leaves out (too large for it) or its downstream refuses: counted once, told to their sender,
and never confused with another event."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.config import ListenerOptions
from agent.model import Event
from agent.pipeline import SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.parallel import build_pipeline
from agent.pipeline.stats import PipelineStats
from agent.receiver import MemoryDeliver, PipelineDeliver, Receiver, Rejected
from agent.signing.keys import SigningKey
from agent.sinks.base import SinkContext
from agent.sinks.memory import MemorySink
from agent.sinks.socket import SocketOptions, UnixSink


class Picky(MemorySink):
    """Leaves out what it can never carry (bodies over ``limit`` bytes), as the NATS sink does beyond the
    server's max_payload, and tells the worker so."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.left: list[tuple[Event, str]] = []

    async def send(self, batch: Sequence[Event]) -> None:
        for e in batch:
            if len(e.body) > self.limit:
                self.left.append((e, "too_large"))
            else:
                self.events.append(e)

    def take_dropped(self) -> list[tuple[Event, str]]:
        out, self.left = self.left, []
        return out


def test_a_stale_entry_for_a_reused_address_is_not_taken_for_the_new_event() -> None:
    """The worker keeps what was left out by id until the next flush, with the event itself: an entry whose
    event is another object (its address now holds a new event) says nothing about the new one."""
    from agent.pipeline.worker import _left_of

    new, gone = Event("new", "s", "t", 2, b"small"), Event("big", "s", "t", 1, b"x" * 50)
    assert _left_of({id(new): (gone, "too_large")}, new) is None
    assert _left_of({id(new): (new, "too_large")}, new) == "too_large"


@pytest.mark.parametrize("workers", [0, 1])
def test_every_pipeline_refuses_a_guest_event_no_sink_can_carry(workers: int) -> None:
    async def main() -> Rejected | None:
        q = SinkQueue(100)
        stats = PipelineStats()
        sink = Picky(limit=2000)
        pipeline = build_pipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [q], stats, workers)
        await pipeline.start()
        worker = asyncio.ensure_future(SinkWorker(sink, q, stats.sink("m"), flush_interval=0.01).run())
        deliver = PipelineDeliver(pipeline)
        event = {"specversion": "1.0", "id": "big", "source": "guest://vm", "type": "t", "data": {"pad": "x" * 5000}}
        try:
            await asyncio.wait_for(deliver(event, "vsock:3"), 20)
            return None
        except Rejected as r:
            return r
        finally:
            await deliver.aclose()
            await pipeline.aclose(5)
            pipeline.close()
            await worker

    refused = asyncio.run(main())
    assert refused is not None and (refused.reason, refused.detail) == ("dropped", "too large for sink memory:")


def test_an_event_no_frame_can_carry_is_counted_once_however_often_its_batch_is_sent(tmp_path: Path) -> None:
    """A batch whose put times out (the downstream's window is full) is sent again; the oversize event in it is
    refused once, as too_large, and the rest arrives once the downstream is back."""
    path = tmp_path / "slow.sock"

    def body(i: str) -> bytes:
        return b'{"specversion":"1.0","id":"%s","source":"s","type":"t"}' % i.encode()

    async def main() -> tuple[dict[str, int], list[str], int]:
        mute = socket.socket(socket.AF_UNIX)
        mute.bind(str(path))
        mute.listen()  # takes the connection, never acks
        sink = UnixSink(str(path), SocketOptions(max_unacked=1, send_timeout=0.2, max_frame=400, ack_timeout=60,
                                                 backoff_initial=0.01, backoff_max=0.05), SinkContext())
        q = SinkQueue(100)
        stats = PipelineStats().sink(sink.uri)
        worker = asyncio.ensure_future(SinkWorker(sink, q, stats, batch_max=2, flush_interval=0.05).run())
        await q.put(Event("a", "s", "t", 1, body("a")))
        await asyncio.sleep(0.2)
        await q.put_many([Event("big", "s", "t", 2, b"y" * 500), Event("b", "s", "t", 3, body("b"))])
        await asyncio.sleep(1.0)  # several attempts at [big, b] while the window stays full
        mute.close()
        path.unlink()
        got = MemoryDeliver()
        rx = asyncio.ensure_future(Receiver.build(ListenerOptions(uri=f"unix:{path}"), got).serve())
        while len(got.got) < 2:
            await asyncio.sleep(0.01)
        q.close()
        await asyncio.wait_for(worker, 20)
        rx.cancel()
        await asyncio.gather(rx, return_exceptions=True)
        return dict(q.dropped), got.ids(), sink.sender.stats.too_large

    dropped, delivered, too_large = asyncio.run(main())
    assert dropped == {"too_large": 1} and too_large == 1
    assert delivered == ["a", "b"]


def test_a_downstreams_refusals_are_counted_and_told_while_it_holds_earlier_events(tmp_path: Path) -> None:
    """A downstream that refuses events 2 and 3 and holds event 1 (its own sink is down) acks nothing for a
    while; its refusals are counted as dropped, and told to whoever sent those events, at once, not when event
    1 is confirmed at last."""
    from agent.codec.framing import LengthPrefixedDecoder, encode_frame
    from agent.pipeline.queue import BatchReceipt
    from agent.transport import Ack, encode_ack

    path = tmp_path / "holding.sock"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(str(path))
        srv.listen()
        srv.setblocking(False)
        sink = UnixSink(str(path), SocketOptions(ack_timeout=60, backoff_initial=0.01, backoff_max=0.05),
                        SinkContext())
        q = SinkQueue(100)
        stats = PipelineStats().sink(sink.uri)
        worker = asyncio.ensure_future(SinkWorker(sink, q, stats, flush_interval=0.01).run())
        events = [Event(f"e{i}", "s", "t", i, b'{"n":%d}' % i) for i in (1, 2, 3)]
        receipt = BatchReceipt(events, 1)
        told: list[tuple[int, str]] = []
        receipt.watch(lambda i, why: told.append((i, str(why))))
        await q.put_many(events, receipt)
        conn, _ = await loop.sock_accept(srv)
        dec = LengthPrefixedDecoder(1 << 20)
        frames: list[bytes] = []
        while len(frames) < 3:
            dec.feed(await loop.sock_recv(conn, 65536))
            frames += dec.frames()
        await loop.sock_sendall(conn, encode_frame(encode_ack(Ack(0, ((2, "dropped: full"), (3, "dropped: full"))))))
        async with asyncio.timeout(10):
            while len(told) < 2:
                await asyncio.sleep(0.01)
        assert [i for i, _ in told] == [1, 2] and "refused by sink unix:" in told[0][1]
        assert q.dropped == {"refused": 2} and not receipt.future.done()  # event 1 is still held downstream
        await loop.sock_sendall(conn, encode_frame(encode_ack(Ack(3))))
        answers = await asyncio.wait_for(receipt.future, 10)
        assert [a if a is True else str(a) for a in answers] == [True, told[0][1], told[1][1]]
        q.close()
        await asyncio.wait_for(worker, 10)
        conn.close()
        srv.close()

    asyncio.run(main())
