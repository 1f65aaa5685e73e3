"""The receiver over real unix sockets: acks, refusals, limits, duplicates, failures."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agent.codec.framing import LengthPrefixedDecoder, encode_frame
from agent.config import ListenerOptions
from agent.errors import TransportError
from agent.receiver import MemoryBatchDeliver, MemoryDeliver, Receiver, Rejected
from agent.transport import Ack, ByteStream, connect, decode_ack, vsock_available

T = TypeVar("T")
ME = f"unix:uid={os.getuid()},pid={os.getpid()}"


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ev(i: int | str, **over: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"id-{i}", "source": "guest://vm/app", "type": "io.example.v1",
            "data": {"i": i}, **over}


def frame(obj: Any) -> bytes:
    return encode_frame(orjson.dumps(obj))


class Client:
    """A raw guest: writes frames, reads acks."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.dec = LengthPrefixedDecoder()
        self.acks: list[Ack] = []

    async def send(self, *objs: Any) -> None:
        await self.stream.send(b"".join(frame(o) for o in objs))

    async def until(self, count: int) -> Ack:
        """Read acks until one covers ``count`` frames; returns it with every refusal seen so far."""
        while not self.acks or self.acks[-1].count < count:
            chunk = await self.stream.receive()
            if not chunk:
                raise EOFError(f"closed with acks {self.acks}")
            self.dec.feed(chunk)
            self.acks.extend(decode_ack(f) for f in self.dec.frames())
        return Ack(self.acks[-1].count, tuple(r for a in self.acks for r in a.rejected))

    async def closed(self) -> bool:
        while True:
            chunk = await self.stream.receive()
            if not chunk:
                return True
            self.dec.feed(chunk)
            self.acks.extend(decode_ack(f) for f in self.dec.frames())


Dial = Callable[[], Awaitable["Client"]]


async def with_receiver(tmp_path: Path, body: Callable[[Receiver, Callable[[], Awaitable[Client]], MemoryDeliver],
                                                       Awaitable[T]], *, batch: bool = False, **opts: Any) -> T:
    path = tmp_path / "rx.sock"
    options = replace(ListenerOptions(uri=f"unix:{path}"), **opts)
    sink = MemoryBatchDeliver() if batch else MemoryDeliver()
    rx = Receiver.build(options, sink, drain_timeout=2.0)
    server = asyncio.ensure_future(rx.serve())

    async def client() -> Client:
        return Client(await connect(f"unix:{path}"))

    try:
        return await body(rx, client, sink)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_events_are_delivered_in_order_with_hostpeer_and_acked(tmp_path: Path, batch: bool) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Ack, MemoryDeliver]:
        c = await client()
        await c.send(*[ev(i) for i in range(100)])
        return await c.until(100), sink

    ack, sink = run(with_receiver(tmp_path, body, batch=batch))
    assert ack == Ack(100)
    assert sink.ids() == [f"id-{i}" for i in range(100)]
    assert {p for _e, p in sink.got} == {ME}


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_no_more_than_max_inflight_frames_are_handed_on_even_from_one_write(tmp_path: Path, batch: bool) -> None:
    """One write of 100 frames (one read, or a few) with ``max_inflight = 5``: five are handed on, the others
    wait in the receiver until those settle, then go on five at a time."""

    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[list[int], Ack, MemoryDeliver]:
        sink.hold = True
        c = await client()
        await c.send(*[ev(i) for i in range(100)])
        while len(sink.got) < 5:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # any more handed on from what was read would be by now
        handed = [len(sink.got)]
        while len(sink.got) < 100:
            held, sink.held = sink.held, []
            for fut in held:
                fut.set_result(None if batch else True)
            await asyncio.sleep(0.02)
            handed.append(len(sink.got))
        for fut in sink.held:
            fut.set_result(None if batch else True)
        return handed, await c.until(100), sink

    handed, ack, sink = run(with_receiver(tmp_path, body, batch=batch, max_inflight=5))
    assert handed[0] == 5 and all(b - a <= 5 for a, b in itertools.pairwise(handed))
    assert ack == Ack(100) and sink.ids() == [f"id-{i}" for i in range(100)]


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_refused_frames_are_acked_as_refused_and_the_connection_goes_on(tmp_path: Path, batch: bool) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Ack, Receiver, MemoryDeliver]:
        c = await client()
        await c.stream.send(encode_frame(b"{not json"))
        await c.send(ev(1), {"id": "no-spec"}, ev(2, ext=1.5), ev(3))
        return await c.until(5), rx, sink

    ack, rx, sink = run(with_receiver(tmp_path, body, batch=batch))
    assert ack.count == 5
    assert [n for n, _r in ack.rejected] == [1, 3, 4]
    assert ack.rejected[0][1].startswith("json:")
    assert sink.ids() == ["id-1", "id-3"]
    assert rx.stats.rejected == {"json": 1, "attributes": 2}


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_huge_length_closes_only_that_connection_after_acking_what_came_before(tmp_path: Path, batch: bool) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Client, Receiver]:
        bad, good = await client(), await client()
        await bad.stream.send(frame(ev("a")) + struct.pack(">I", (1 << 20) + 1))
        assert await bad.closed()
        await good.send(ev("b"))
        assert (await good.until(1)).count == 1
        return bad, rx

    bad, rx = run(with_receiver(tmp_path, body, batch=batch))
    assert bad.acks[-1].count == 2
    assert [(n, r.split(":")[0]) for a in bad.acks for n, r in a.rejected] == [(2, "frame")]
    assert rx.stats.rejected == {"frame": 1}


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_duplicates_are_dropped_counted_and_acked(tmp_path: Path, batch: bool) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Receiver, MemoryDeliver]:
        c = await client()
        await c.send(ev(1), ev(2), ev(1))
        await c.until(3)
        c2 = await client()
        await c2.send(ev(2), ev(3))
        await c2.until(2)
        return rx, sink

    rx, sink = run(with_receiver(tmp_path, body, batch=batch))
    assert sink.ids() == ["id-1", "id-2", "id-3"]
    assert rx.stats.duplicates == 2


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_the_duplicate_window_keeps_long_names_as_digests(tmp_path: Path, batch: bool) -> None:
    """A guest's megabyte-long ids and sources cost the window a digest each, not their length; events that
    differ only at the end of a long name stay apart, and a copy of one is still a duplicate."""
    long_id, long_source = "i" * 200_000, "guest://vm/" + "s" * 200_000

    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Receiver, MemoryDeliver]:
        c = await client()
        await c.send(ev(long_id + "a"), ev(long_id + "b"), ev(1, source=long_source + "x"),
                     ev(1, source=long_source + "y"), ev(long_id + "a"), ev(1, source=long_source + "y"))
        await c.until(6)
        assert all(len(part) <= 300 for key in rx.dedupe.entries for part in key)
        return rx, sink

    rx, sink = run(with_receiver(tmp_path, body, batch=batch))
    assert len(sink.ids()) == 4 and rx.stats.duplicates == 2


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_finishing_stops_reading_and_acks_what_was_taken_as_it_settles(tmp_path: Path, batch: bool) -> None:
    """A shutdown: what the connection took is acknowledged once it settles, then the connection ends; what
    arrives after is neither taken nor acked (the guest sends it again), and a new guest is refused at once (the
    address is gone), not left waiting on a connection nobody reads."""

    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Client, MemoryDeliver]:
        sink.hold = True
        c = await client()
        await c.send(*[ev(i) for i in range(5)])
        while len(sink.got) < 5:
            await asyncio.sleep(0.01)
        finishing = asyncio.ensure_future(rx.finish(10.0))
        await asyncio.sleep(0.05)
        await c.send(ev(99))  # after the reading stopped: not taken
        with pytest.raises(TransportError, match="cannot connect"):
            await client()
        assert not (tmp_path / "rx.sock").exists()
        await asyncio.sleep(0.1)
        assert not finishing.done() and c.acks[-1:] != [Ack(5)]
        for fut in sink.held:
            fut.set_result(None if batch else True)
        await asyncio.wait_for(finishing, 5)
        # both ended by the host (reading to the end returns), the first with the ack of all it took
        assert await asyncio.wait_for(c.closed(), 5)
        return c, sink

    c, sink = run(with_receiver(tmp_path, body, batch=batch))
    assert c.acks[-1] == Ack(5) and all(a.count <= 5 and not a.rejected for a in c.acks)
    assert sink.ids() == [f"id-{i}" for i in range(5)]


def test_a_duplicate_of_a_pending_event_waits_for_it(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> list[int]:
        sink.hold = True
        c1, c2 = await client(), await client()
        await c1.send(ev(1))
        while not sink.held:
            await asyncio.sleep(0.001)
        await c2.send(ev(1), ev(2))
        while len(sink.held) < 2:
            await asyncio.sleep(0.001)
        sink.held[1].set_result(True)  # id-2 is durable, but id-1 (frame 1 of c2) is not yet
        await asyncio.sleep(0.05)
        seen_before = [a.count for a in c2.acks]
        sink.held[0].set_result(True)
        await c2.until(2)
        return seen_before

    assert run(with_receiver(tmp_path, body)) == []


def test_failed_delivery_closes_without_ack_and_the_resend_is_taken(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Client, MemoryDeliver]:
        sink.fail_ids = {"id-2"}
        c = await client()
        await c.send(ev(1), ev(2), ev(3))
        assert await c.closed()
        again = await client()
        await again.send(ev(2), ev(3))
        await again.until(2)
        return c, sink

    c, sink = run(with_receiver(tmp_path, body))
    assert max((a.count for a in c.acks), default=0) <= 1
    # id-3 was handed on before id-2 failed; its re-sent copy is a duplicate. id-2 comes again, once.
    assert sink.ids() == ["id-1", "id-3", "id-2"]


def test_pipeline_refusal_and_drop_are_acked_as_refused(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> Ack:
        c = await client()
        sink.result = False
        await c.send(ev(1))
        await c.until(1)
        sink.result = True
        original = rx.deliver

        def refusing(event: dict[str, Any], peer: str) -> Awaitable[Any]:
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(Rejected("attributes", "cannot stamp"))
            return fut

        rx.deliver = refusing
        await c.send(ev(2))
        ack = await c.until(2)
        rx.deliver = original
        return ack

    ack = run(with_receiver(tmp_path, body))
    assert [(n, r.split(":")[0]) for n, r in ack.rejected] == [(1, "dropped"), (2, "attributes")]


def test_connection_limit(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> Receiver:
        first = await client()
        await first.send(ev(1))
        await first.until(1)
        second = await client()
        assert await second.closed()
        return rx

    rx = run(with_receiver(tmp_path, body, max_connections=1))
    assert rx.stats.rejected == {"connections": 1}


def test_idle_connection_is_closed(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> Receiver:
        c = await client()
        assert await c.closed()
        return rx

    rx = run(with_receiver(tmp_path, body, idle_timeout=0.05))
    assert rx.stats.rejected == {"idle": 1}


def test_a_frame_sent_a_byte_at_a_time_must_be_complete_within_idle_timeout(tmp_path: Path) -> None:
    """A peer that keeps a connection (and a slot of max_connections) by sending a frame one byte at a time,
    each byte well within idle_timeout, is closed once the frame has taken idle_timeout; the frames it completed
    before are acked."""

    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Receiver, list[int]]:
        c = await client()
        await c.send(ev(1))
        await c.until(1)
        slow = frame(ev(2))
        sent = []
        for i in range(len(slow) - 1):
            try:
                await c.stream.send(slow[i : i + 1])
            except TransportError:
                break
            sent.append(i)
            await asyncio.sleep(0.05)
        with contextlib.suppress(TransportError):  # closed, or reset under the bytes still being sent
            assert await c.closed()
        return rx, sent

    rx, sent = run(with_receiver(tmp_path, body, idle_timeout=0.5))
    assert rx.stats.rejected == {"idle": 1} and rx.stats.accepted == 1
    assert len(sent) < len(frame(ev(2))) - 1  # cut off before the frame was complete


def test_too_deep_is_refused(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> Ack:
        c = await client()
        await c.send(ev(1, data=[[[[[[1]]]]]]))
        return await c.until(1)

    ack = run(with_receiver(tmp_path, body, max_depth=4))
    assert ack.rejected[0][1].startswith("depth:")


def test_an_event_with_more_attributes_than_the_listener_allows_is_refused_alone(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Ack, Receiver]:
        c = await client()
        await c.send(ev(1, **{f"x{i}": i for i in range(20)}))
        await c.send(ev(2, x1=1))
        return await c.until(2), rx

    ack, rx = run(with_receiver(tmp_path, body, max_attributes=10))
    assert [(n, r.split(":")[0]) for n, r in ack.rejected] == [(1, "attributes")]
    assert "more than max_attributes (10)" in ack.rejected[0][1]
    assert rx.stats.rejected == {"attributes": 1} and rx.stats.accepted == 1


def test_refusals_are_logged_once_per_peer_and_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> Receiver:
        c = await client()
        await c.stream.send(encode_frame(b"x") * 50)
        await c.send({"specversion": "1.0"})
        await c.until(51)
        return rx

    with caplog.at_level(logging.WARNING, logger="agent.receiver"):
        rx = run(with_receiver(tmp_path, body))
    assert rx.stats.rejected == {"json": 50, "attributes": 1}
    lines = [r.getMessage() for r in caplog.records if "refused from" in r.getMessage()]
    assert len(lines) == 2


def test_log_memory_is_bounded() -> None:
    from agent.receiver import ReceiverStats, RejectLog

    rl = RejectLog(ReceiverStats(), listener="t", max_peers=8, logger=logging.getLogger("test.quiet"))
    for uid in range(1000):
        rl(f"unix:uid={uid},pid=7", "json", "x")
    assert len(rl.once) == 8
    assert rl.stats.rejected["json"] == 1000


def test_a_guest_cycling_through_more_uids_than_are_remembered_cannot_flood_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """Each uid is a channel of its own, and the memory of who was logged is bounded: the lines themselves are
    rate-limited, a burst and then one a second, and the next line says how many went unlogged."""
    from agent.receiver import ReceiverStats, RejectLog

    now = [0.0]
    rl = RejectLog(ReceiverStats(), listener="t", max_peers=16, burst=5, every=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            for uid in range(100):
                rl(f"unix:uid={uid},pid=7", "json", "x")
        # the five logged are remembered (the held-back ones take no place), so their repeats are not counted
        assert len(caplog.records) == 5 and rl.once.unlogged == 285
        now[0] += 2.0  # two more lines' worth
        rl("unix:uid=5000,pid=7", "json", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7 and "uid=5000" in lines[6]
    assert lines[5].startswith("285 more like the next, from peers not logged before")
    assert rl.stats.rejected["json"] == 301


def test_a_guest_forking_a_sender_per_event_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """The log keys on the channel (a unix peer's uid), not on each process: 100 pids are one line."""
    from agent.receiver import ReceiverStats, RejectLog

    rl = RejectLog(ReceiverStats(), listener="t")
    with caplog.at_level(logging.WARNING):
        for pid in range(100):
            rl(f"unix:uid=1000,pid={pid}", "json", "x")
        rl("unix:uid=1001,pid=5", "json", "x")
        rl("vsock:3", "json", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "from unix:uid=1000,pid=0: json" in lines[0] and "from unix:uid=1000 are" in lines[0]
    assert rl.stats.rejected["json"] == 102


@pytest.mark.skipif(not vsock_available(), reason="AF_VSOCK not available")
def test_vsock_receiver_binds_serves_and_stops() -> None:
    import socket

    probe = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    with probe:
        probe.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        port = probe.getsockname()[1]

    async def main() -> str:
        rx = Receiver.build(ListenerOptions(uri=f"vsock:any:{port}"), MemoryDeliver())
        task = asyncio.ensure_future(rx.serve())
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return rx.address

    assert run(main()) == f"vsock:any:{port}"


def test_heartbeats_keep_a_slow_downstream_connected(tmp_path: Path) -> None:
    from agent.transport import AckedSender, Backoff, dialer

    async def main() -> AckedSender[bytes]:
        path = tmp_path / "slow.sock"
        slow = MemoryDeliver()
        slow.hold = True
        rx = Receiver.build(ListenerOptions(uri=f"unix:{path}"), slow, heartbeat=0.05)
        serving = asyncio.ensure_future(rx.serve())
        # the ack timeout is many heartbeats long, so a loaded machine that delays a few of them changes nothing
        sender: AckedSender[bytes] = AckedSender(dialer(f"unix:{path}"), lambda b: b, name="t", ack_timeout=1.5,
                                                 backoff=Backoff(0.01, 0.05))
        await sender.put([orjson.dumps(ev(1))])
        while not slow.held:
            await asyncio.sleep(0.001)
        await asyncio.sleep(3.0)  # two ack timeouts' worth of pipeline delay, bridged by heartbeats
        slow.held[0].set_result(True)
        await sender.drain(timeout=5)
        await sender.aclose()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        return sender

    sender = run(main())
    assert (sender.stats.connects, sender.stats.ack_timeouts, sender.stats.acked) == (1, 0, 1)


def test_an_event_over_the_receivers_limit_is_refused_not_resent_forever(tmp_path: Path) -> None:
    from agent.transport import AckedSender, Backoff, dialer

    async def main() -> tuple[AckedSender[bytes], list[str]]:
        path = tmp_path / "small.sock"
        got = MemoryDeliver()
        rx = Receiver.build(replace(ListenerOptions(uri=f"unix:{path}"), max_frame=300), got)
        serving = asyncio.ensure_future(rx.serve())
        refused: list[str] = []
        sender: AckedSender[bytes] = AckedSender(dialer(f"unix:{path}"), lambda b: b, name="t",
                                                 backoff=Backoff(0.01, 0.05),
                                                 on_settled=lambda d, r: refused.extend(x for _i, x in r))
        big = orjson.dumps(ev(2, pad="x" * 400))
        await sender.put([orjson.dumps(ev(1)), big, orjson.dumps(ev(3))])
        await sender.drain(timeout=5)
        await sender.aclose()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        assert got.ids() == ["id-1", "id-3"]
        return sender, refused

    sender, refused = run(main())
    assert len(refused) == 1 and refused[0].startswith("frame: declared frame length")
    assert sender.stats.connects == 2


def test_refusals_are_reported_ahead_of_a_pending_frame_and_only_once(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[list[Ack], Ack]:
        sink.hold = True
        c = await client()
        await c.send(ev(1), ev(2), {"id": "no-spec"})
        while len(sink.held) < 2:
            await asyncio.sleep(0.001)
        sink.held[1].set_result(False)  # frame 2 dropped while frame 1 is still pending
        while sorted(n for a in c.acks for n, _r in a.rejected) != [2, 3]:
            data = await c.stream.receive()
            assert data
            c.dec.feed(data)
            c.acks.extend(decode_ack(f) for f in c.dec.frames())
        early = list(c.acks)
        sink.held[0].set_result(True)
        return early, await c.until(3)

    early, final = run(with_receiver(tmp_path, body))
    assert all(a.count == 0 for a in early)
    assert final.count == 3
    assert sorted((n, r.split(":")[0]) for n, r in final.rejected) == [(2, "dropped"), (3, "attributes")]


@pytest.mark.parametrize(("key", "value"), [("max_frame", 0), ("max_connections", 0), ("idle_timeout", 0),
                                            ("max_depth", 0), ("max_attributes", 0), ("max_inflight", 0),
                                            ("dedupe_window", -1), ("mode", 0o10000)])
def test_listener_limits_are_checked_with_the_config(key: str, value: int) -> None:
    from agent import config
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"listeners\[0\].*{key}"):
        config.parse({"listeners": [{"uri": "unix:/x", key: value}]})
    assert config.parse({"listeners": [{"uri": "unix:/x", "mode": 0o660}]}).listeners[0].mode == 0o660


def test_a_cancelled_receiver_releases_its_address_so_a_reload_can_listen_again(tmp_path: Path) -> None:
    import anyio

    path = tmp_path / "again.sock"
    opts = ListenerOptions(uri=f"unix:{path}")

    async def main() -> str:
        for _ in range(2):  # the second round is what a reload does: the same address again
            rx = Receiver.build(opts, MemoryDeliver())
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(rx.serve)
                    c = await connect(f"unix:{path}")  # a connection open while the scope is cancelled
                    await anyio.sleep(0.01)
                    tg.cancel_scope.cancel()
            await c.aclose()
        return rx.address

    assert anyio.run(main) == f"unix:{path}"
    assert not path.exists()


def test_refusals_a_peer_does_not_read_stop_the_reading_instead_of_piling_up() -> None:
    from agent.transport import MemoryListener

    async def main() -> tuple[int, int]:
        listener = MemoryListener(capacity=4096)
        rx = Receiver(replace(ListenerOptions(uri="memory:rx"), idle_timeout=0.5), MemoryDeliver(), listener=listener)
        serving = asyncio.ensure_future(rx.serve())
        c = await listener.connect()
        bad = encode_frame(b"[1]") * 1000  # each one refused; the guest never reads the acks
        rounds = 0
        try:
            while rounds < 100:
                async with asyncio.timeout(2.0):
                    await c.send(bad)
                rounds += 1
        except (TimeoutError, TransportError):
            pass  # the receiver stopped reading (and hung up)
        refused = rx.stats.rejected["json"]
        async with asyncio.timeout(10):  # ... and, as with any idle peer, it hangs up in the end
            while rx.stats.connections_open:
                await asyncio.sleep(0.01)
        assert rx.stats.rejected["idle"] == 1
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        return rounds, refused

    rounds, refused = run(main(), timeout=30)
    assert rounds < 100
    assert refused < 10_000


def test_one_guest_cannot_pass_anothers_events_off_as_copies() -> None:
    """Dedupe is per channel: the same (source, id) from two VMs are two events; a re-send on one channel is a copy."""
    from agent.transport import MemoryListener

    async def main() -> MemoryDeliver:
        listener = MemoryListener()
        sink = MemoryDeliver()
        rx = Receiver(ListenerOptions(uri="memory:rx"), sink, listener=listener)
        serving = asyncio.ensure_future(rx.serve())
        try:
            forger = Client(await listener.connect("vsock:7"))
            await forger.send(ev(1, source="guest://vm8/app"))  # vm7 claims vm8's source and next id first
            await forger.until(1)
            victim = Client(await listener.connect("vsock:8"))
            await victim.send(ev(1, source="guest://vm8/app"))
            await victim.until(1)
            again = Client(await listener.connect("vsock:8"))  # vm8 reconnects and re-sends: a copy
            await again.send(ev(1, source="guest://vm8/app"))
            await again.until(1)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        assert rx.stats.duplicates == 1
        return sink

    sink = run(main())
    assert sorted(peer for _ev, peer in sink.got) == ["vsock:7", "vsock:8"]


@pytest.mark.parametrize(
    ("peer", "channel"),
    [("unix:uid=0,pid=123", "unix:uid=0"), ("vsock:3", "vsock:3"), ("vm1", "vm1"), ("nats:in.>", "nats:in.>")],
)
def test_channel_of(peer: str, channel: str) -> None:
    from agent.receiver.dedupe import channel_of

    assert channel_of(peer) == channel


# --- the batch path: one future for all new events of a read ---------------------------------------------


def test_a_batch_answer_refuses_only_the_events_it_names(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Ack, Receiver]:
        assert isinstance(sink, MemoryBatchDeliver)
        sink.answers = {"id-2": False, "id-4": ValueError("time '2024-13-45T00:00:00Z' is not a valid date")}
        c = await client()
        await c.send(ev(1), ev(2), {"id": "no-spec"}, ev(4), ev(5))
        return await c.until(5), rx

    ack, rx = run(with_receiver(tmp_path, body, batch=True))
    assert ack.count == 5
    assert sorted((n, r.split(":")[0]) for n, r in ack.rejected) == [(2, "dropped"), (3, "attributes"),
                                                                      (4, "attributes")]
    assert "2024-13-45" in dict(ack.rejected)[4]
    # taken: 1 and 5; 2 was dropped from a queue, 3 refused by the receiver, 4 by the answer
    assert rx.stats.dropped == 1 and rx.stats.accepted == 2


def test_a_copy_inside_one_read_follows_its_first(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Ack, Receiver, MemoryDeliver]:
        assert isinstance(sink, MemoryBatchDeliver)
        sink.answers = {"id-1": False}
        c = await client()
        await c.send(ev(1), ev(2), ev(1), ev(3))  # one write: one read, one batch
        return await c.until(4), rx, sink

    ack, rx, sink = run(with_receiver(tmp_path, body, batch=True))
    assert sink.ids() == ["id-1", "id-2", "id-3"] and rx.stats.duplicates == 1
    # the copy shares the first one's fate: both dropped, both refused
    assert sorted(n for n, _r in ack.rejected) == [1, 3]


def test_a_copy_of_a_pending_batch_waits_for_it_and_is_settled_with_it(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[list[int], Ack]:
        assert isinstance(sink, MemoryBatchDeliver)
        sink.hold = True
        c1, c2 = await client(), await client()
        await c1.send(ev(1), ev(2))
        while not sink.held:
            await asyncio.sleep(0.001)
        await c2.send(ev(2), ev(3))
        while len(sink.held) < 2:
            await asyncio.sleep(0.001)
        sink.release(1)  # id-3 is durable, but id-2 (frame 1 of c2) waits on c1's batch
        await asyncio.sleep(0.05)
        seen_before = [a.count for a in c2.acks]
        sink.release(0)
        return seen_before, await c2.until(2)

    before, after = run(with_receiver(tmp_path, body, batch=True))
    assert before == [] and after == Ack(2)


def test_a_failed_batch_closes_the_connection_unacked_and_is_taken_when_sent_again(tmp_path: Path) -> None:
    async def body(rx: Receiver, client: Dial, sink: MemoryDeliver) -> tuple[Client, MemoryDeliver]:
        sink.fail_ids = {"id-2"}
        c = await client()
        await c.send(ev(1), ev(2), ev(3))
        assert await c.closed()
        again = await client()
        await again.send(ev(1), ev(2), ev(3))
        assert await again.until(3) == Ack(3)
        return c, sink

    c, sink = run(with_receiver(tmp_path, body, batch=True))
    assert max((a.count for a in c.acks), default=0) == 0
    assert sink.ids() == ["id-1", "id-2", "id-3"]  # the failed batch left no copy behind to be skipped


async def _release_until(sink: MemoryBatchDeliver, done: Callable[[], bool]) -> None:
    """Let the held deliveries complete, again as more come, until ``done()``; then the last of them."""
    while True:
        finished = done()
        for fut in sink.held:
            if not fut.done():
                fut.set_result(None)
        if finished:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("told", ["poll", "heartbeat"])
@pytest.mark.parametrize("frames", [1, 12], ids=["pending", "reader-blocked-on-max-inflight"])
def test_a_peer_that_hung_up_frees_its_slot_while_its_frames_wait_on_a_sink(tmp_path: Path, frames: int, told: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With a sink down, guests that send and hang up (a cron job's `hoststamp send`, a guest restarting) must not
    keep their connection slots until the sink is back: the next guests would all be refused. What they left
    still counts against the listener's bound on unsettled frames (max_connections x max_inflight), so guests
    that connect, send and leave cannot pile up frames without end. A guest that only shut down its sending
    side still waits for its acks, and gets them. ``heartbeat``: a socket that cannot tell a hang-up from a
    half-close (vsock), where the failing heartbeat ack tells it."""
    if told == "heartbeat":
        from agent.transport.stream import SocketStream

        monkeypatch.setattr(SocketStream, "hung_up", lambda self: False)
    path = tmp_path / "rx.sock"
    sink = MemoryBatchDeliver()
    sink.hold = True
    # "poll": heartbeats far apart, so that only looking at the socket can find the peer gone in time
    rx = Receiver.build(replace(ListenerOptions(uri=f"unix:{path}"), max_connections=2), sink,
                        drain_timeout=3600.0, heartbeat=0.05 if told == "heartbeat" else 3600.0, max_inflight=5)
    assert rx.max_unsettled == 10

    async def body() -> Ack:
        server = asyncio.ensure_future(rx.serve())
        try:
            for i in range(4):  # twice the limit, one after another, each hanging up at once
                c = Client(await connect(f"unix:{path}"))
                await c.send(*[ev(f"{i}-{j}") for j in range(frames)])
                while len(sink.got) < min((i + 1) * min(frames, 5), 10):
                    await asyncio.sleep(0.01)
                await c.stream.aclose()
                while rx.stats.connections_open:  # no timing: without the fix this never ends (run's timeout)
                    await asyncio.sleep(0.01)
            assert rx.stats.rejected.get("connections", 0) == 0
            assert rx.unsettled == len(sink.got) <= rx.max_unsettled
            # half-closed: still served, and acked once the sink takes its frame
            c = Client(await connect(f"unix:{path}"))
            await c.send(ev("half"))
            raw: Any = c.stream
            raw._writer.write_eof()  # shutdown(SHUT_WR)
            await asyncio.sleep(0.6)  # several looks: time to close it, were it taken for hung up
            assert rx.stats.connections_open == 1
            await _release_until(sink, lambda: any(e["id"] == "id-half" for e, _p in sink.got))
            return await c.until(1)
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)

    assert run(body(), timeout=30) == Ack(1)


def test_the_bytes_a_listener_holds_unsettled_are_bounded(tmp_path: Path) -> None:
    """Frames may be up to max_frame each: a bound in frames alone leaves memory unbounded while a sink is down.
    Frames of about 900 bytes, a bound of 4 KiB: the listener holds just enough to reach it, however many one
    write brings."""
    path = tmp_path / "rx.sock"
    sink = MemoryBatchDeliver()
    sink.hold = True
    rx = Receiver.build(replace(ListenerOptions(uri=f"unix:{path}"), max_unsettled_bytes=4096), sink,
                        heartbeat=0.05)

    async def body() -> tuple[int, int, Ack]:
        server = asyncio.ensure_future(rx.serve())
        try:
            c = Client(await connect(f"unix:{path}"))
            await c.send(*[ev(i, pad="x" * 900) for i in range(40)])
            while len(sink.got) < 4:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # several polls: time to take more, were the bound not kept
            held, size = len(sink.got), rx.unsettled_bytes
            await _release_until(sink, lambda: len(sink.got) >= 40)  # the rest flows, a few at a time
            return held, size, await c.until(40)
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)

    held, size, ack = run(body(), timeout=30)
    one = len(frame(ev(10, pad="x" * 900)))  # the frames differ by a digit or two at most
    assert held == -(-4096 // one) and 4096 <= size < 4096 + one + 4 and ack == Ack(40)


def test_refusals_the_rate_held_back_are_said_when_no_line_follows(caplog: pytest.LogCaptureFixture) -> None:
    """A flood of new peers, then silence: how many went unlogged is said a while later, without waiting for a
    line that may never come; a peer whose first line the rate held back is named when it comes again."""
    from agent.receiver import ReceiverStats, RejectLog

    async def main() -> RejectLog:
        rl = RejectLog(ReceiverStats(), listener="t", burst=3, every=0.05)
        for uid in range(10):
            rl(f"unix:uid={uid},pid=7", "json", "x")
        assert rl.once.unlogged == 7
        await asyncio.sleep(0.2)  # nothing more comes
        assert rl.once.unlogged == 0
        rl("unix:uid=9,pid=7", "json", "x")  # held back before: named now
        return rl

    with caplog.at_level(logging.WARNING):
        rl = asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5, lines
    assert lines[3].startswith("7 more, from peers not logged before, were only counted")
    assert "uid=9" in lines[4]
    assert rl.stats.rejected["json"] == 11


def test_refusals_held_back_are_said_when_the_listener_closes(caplog: pytest.LogCaptureFixture) -> None:
    from agent.receiver import ReceiverStats, RejectLog

    rl = RejectLog(ReceiverStats(), listener="t", burst=1, every=60.0)
    with caplog.at_level(logging.WARNING):
        for uid in range(4):
            rl(f"unix:uid={uid},pid=7", "json", "x")
        rl.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[1].startswith("3 more, from peers not logged before")
