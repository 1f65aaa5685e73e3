"""Socket sinks against the real receiver: acks, restarts mid-stream, timeouts, configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent import config
from agent.config import ListenerOptions
from agent.errors import ConfigError, SinkError
from agent.model import Event
from agent.receiver import MemoryDeliver, Receiver
from agent.sinks import registry
from agent.sinks.base import SinkContext
from agent.sinks.socket import FcVsockSink, SocketOptions, UnixSink, VsockSink
from agent.transport import listen

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def events(n: int) -> list[Event]:
    out = []
    for i in range(n):
        body = orjson.dumps({"specversion": "1.0", "id": f"e-{i}", "source": "host://h/cgroup",
                             "type": "io.hoststamp.host.v1.cgroup", "data": {"i": i}})
        out.append(Event(f"e-{i}", "host://h/cgroup", "io.hoststamp.host.v1.cgroup", i, body))
    return out


def test_registered_schemes() -> None:
    assert registry.get("unix") is UnixSink
    assert registry.get("vsock") is VsockSink
    assert registry.get("fcvsock") is FcVsockSink


def test_config_keys_are_checked() -> None:
    cfg = config.parse({"sinks": [{"uri": "unix:/run/x.sock", "max_unacked": 5, "ack_timeout": 2}]})
    assert cfg.sinks[0].options == SocketOptions(max_unacked=5, ack_timeout=2.0)
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.nope"):
        config.parse({"sinks": [{"uri": "unix:/x", "nope": 1}]})
    with pytest.raises(ConfigError, match="max_unacked"):
        config.parse({"sinks": [{"uri": "unix:/x", "max_unacked": 0}]})


@pytest.mark.parametrize(("cls", "target"), [(VsockSink, "any:5000"), (VsockSink, "x:1"), (FcVsockSink, "/x")])
def test_bad_targets_are_sink_errors(cls: type[UnixSink], target: str) -> None:
    with pytest.raises(SinkError):
        cls(target, SocketOptions(), SinkContext())


def test_receiver_restarted_twice_mid_stream_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "b.sock"
    durable = MemoryDeliver()
    settled: list[str] = []

    async def main() -> UnixSink:
        sink = UnixSink(str(path), SocketOptions(backoff_initial=0.005, backoff_max=0.05, max_unacked=64),
                        SinkContext())
        sink.on_settled = lambda done, refused: settled.extend(e.id for e in done)
        await sink.open()
        all_events = events(600)
        restarts = 0

        async def receiver_lives(until: int) -> None:
            rx = Receiver.build(ListenerOptions(uri=f"unix:{path}"), durable)
            serving = asyncio.ensure_future(rx.serve())
            while len(durable.ids()) < until:
                await asyncio.sleep(0.001)
            serving.cancel()  # connections drop with events unacked: the sender must send them again
            await asyncio.gather(serving, return_exceptions=True)

        async def downstream() -> None:
            nonlocal restarts
            for until in (150, 350):
                await receiver_lives(until)
                restarts += 1
                await asyncio.sleep(0.02)  # down for a moment: connects fail and back off
            await receiver_lives(10**9)

        down = asyncio.ensure_future(downstream())
        for i in range(0, 600, 50):
            await sink.send(all_events[i : i + 50])
        await sink.flush()
        assert restarts == 2
        await sink.aclose()
        down.cancel()
        await asyncio.gather(down, return_exceptions=True)
        return sink

    sink = run(main())
    assert set(durable.ids()) == {f"e-{i}" for i in range(600)}
    assert settled == [f"e-{i}" for i in range(600)]  # each settled once, in order
    stats = sink.sender.stats
    assert stats.connects >= 3
    assert stats.acked == 600
    assert sink.unacked == 0


def test_flush_fails_when_nobody_acks(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"

    async def main() -> None:
        lst = listen(f"unix:{path}")  # accepts nothing, acks nothing
        sink = UnixSink(str(path), SocketOptions(ack_timeout=0.1, send_timeout=0.1, max_unacked=3), SinkContext())
        await sink.send(events(3))
        with pytest.raises(SinkError, match="no room"):
            await sink.send(events(1))
        with pytest.raises(SinkError, match="not acknowledged"):
            await sink.flush()
        with pytest.raises(SinkError):
            await sink.aclose()
        await lst.aclose()

    run(main())


def test_a_sink_that_cannot_connect_is_down_at_once_and_up_again_once_connected(tmp_path: Path) -> None:
    """Failed connects are retried by the sender itself, while send only queues: the worker still shows the sink
    down (and counts each failure) as they happen, not when a flush times out ``ack_timeout`` later."""
    from agent.pipeline import PipelineStats, SinkQueue, SinkWorker

    path = tmp_path / "later.sock"

    async def main() -> tuple[bool, int, str | None, bool, list[str]]:
        sink = UnixSink(str(path), SocketOptions(backoff_initial=0.02, backoff_max=0.05, ack_timeout=60),
                        SinkContext())
        queue = SinkQueue(100)
        stats = PipelineStats().sink(sink.uri)
        worker = asyncio.ensure_future(SinkWorker(sink, queue, stats, flush_interval=0.01).run())
        await queue.put_many(events(3))
        while stats.send_errors < 3:
            await asyncio.sleep(0.01)
        down = (stats.healthy, stats.send_errors, stats.last_error)
        got = MemoryDeliver()
        rx = asyncio.ensure_future(Receiver.build(ListenerOptions(uri=f"unix:{path}"), got).serve())
        while len(got.got) < 3 or not stats.healthy:
            await asyncio.sleep(0.01)
        queue.close()
        await worker
        rx.cancel()
        await asyncio.gather(rx, return_exceptions=True)
        return (*down, stats.healthy, got.ids())

    healthy, errors, last_error, healthy_after, ids = run(main())
    assert not healthy and errors >= 3 and last_error is not None and "cannot connect" in last_error
    assert healthy_after and ids == ["e-0", "e-1", "e-2"]


def test_a_batch_larger_than_the_window_goes_out_as_room_is_made(tmp_path: Path) -> None:
    """``max_unacked`` bounds what is in flight even when one batch holds more; a send that timed out goes on
    where it stopped when the worker retries the same batch (nothing is taken twice)."""
    path = tmp_path / "slow.sock"
    seen: list[int] = []
    acking = asyncio.Event()

    async def downstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = acked = 0
        while True:
            try:
                head = await asyncio.wait_for(reader.readexactly(4), 0.05)
                await reader.readexactly(int.from_bytes(head, "big"))
                n += 1
                seen.append(n)
            except TimeoutError:
                pass
            except asyncio.IncompleteReadError:
                return
            if acking.is_set() and n > acked:  # acks only once let, then everything it has
                acked = n
                ack = orjson.dumps({"ack": n})
                writer.write(len(ack).to_bytes(4, "big") + ack)
                await writer.drain()

    async def main() -> None:
        server = await asyncio.start_unix_server(downstream, str(path))
        sink = UnixSink(str(path), SocketOptions(ack_timeout=30, send_timeout=0.3, max_unacked=10), SinkContext())
        batch = events(45)
        with pytest.raises(SinkError, match="no room"):
            await sink.send(batch)
        await asyncio.sleep(0.2)
        assert len(seen) == 10 and sink.sender.pending == 10  # the window, not the batch
        acking.set()
        await sink.send(batch)  # the worker's retry: on from the eleventh
        await sink.flush()
        await sink.aclose()
        server.close()

    run(main())
    assert seen == list(range(1, 46))  # each event once


def test_a_downstream_that_stops_acknowledging_is_one_send_error_each_time(tmp_path: Path) -> None:
    """A downstream that takes frames and never acknowledges them: the ack timeout drops each connection, and
    the flush waiting on those acks gives up too, just before or after it, or once the sink is connected
    again. Each silent connection is one failure, counted once."""
    from agent.pipeline import PipelineStats, SinkQueue, SinkWorker

    path = tmp_path / "mute.sock"

    async def main() -> tuple[int, int]:
        lst = listen(f"unix:{path}")
        silent = []

        async def accept() -> None:
            while True:
                silent.append(await lst.accept())  # reads nothing, acks nothing

        acceptor = asyncio.ensure_future(accept())
        sink = UnixSink(str(path), SocketOptions(ack_timeout=0.2, backoff_initial=0.01, backoff_max=0.01),
                        SinkContext())
        queue = SinkQueue(100)
        stats = PipelineStats().sink(sink.uri)
        worker = asyncio.ensure_future(SinkWorker(sink, queue, stats, flush_interval=0.01).run())
        await queue.put_many(events(3))
        # four silent connections dropped, and the fifth made (the fourth's failure told by then)
        while sink.sender.stats.ack_timeouts < 4 or sink.sender.stats.connects < 5:
            await asyncio.sleep(0.01)
        errors, timeouts = stats.send_errors, sink.sender.stats.ack_timeouts
        worker.cancel()
        acceptor.cancel()
        await asyncio.gather(worker, acceptor, return_exceptions=True)
        for conn in silent:
            await conn.aclose()
        await lst.aclose()
        return errors, timeouts

    errors, timeouts = run(main())
    assert timeouts == 4 and errors == 4
