"""Guest -> socket sink -> receiver -> the real pipeline (stamp, sign) -> a sink: the whole host path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson

from agent.config import ListenerOptions
from agent.model import Event
from agent.pipeline import Pipeline, SequenceStore, SinkQueue, SinkWorker, Stamper
from agent.pipeline.stats import PipelineStats
from agent.receiver import PipelineDeliver, Receiver, serve_listener
from agent.signing.event import sign_event, verify_event
from agent.signing.keys import SigningKey, generate_keypair
from agent.sinks.base import SinkContext
from agent.sinks.memory import MemorySink
from agent.sinks.socket import SocketOptions, UnixSink

T = TypeVar("T")
ME = f"unix:uid={os.getuid()},pid={os.getpid()}"


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def guest_events(n: int, key: SigningKey | None = None) -> list[Event]:
    out = []
    for i in range(n):
        ev: dict[str, Any] = {"specversion": "1.0", "id": f"g-{i}", "source": "guest://vm1/app",
                              "type": "io.example.v1", "time": "2026-11-22T02:00:00Z", "data": {"i": i},
                              "hostid": "forged", "sequence": "999999", "hostpeer": "vsock:1"}
        if key is not None:
            sign_event(ev, key)
        out.append(Event(ev["id"], ev["source"], ev["type"], i, orjson.dumps(ev)))
    return out


async def through_a_host(opts: ListenerOptions, host_key: SigningKey, *batches: list[Event]
                         ) -> tuple[MemorySink, Receiver, int]:
    """A guest sends each of ``batches`` over ``opts.uri`` to a receiver on the real pipeline, whose one sink
    is in memory; returns that sink, the receiver, and how many events the guest was told were refused."""
    out = MemorySink()
    queue = SinkQueue(1000)
    stats = PipelineStats()
    pipeline = Pipeline(Stamper(host_key, "host-1", SequenceStore(None)), [queue], stats)
    worker = asyncio.ensure_future(SinkWorker(out, queue, stats.sink("mem"), flush_interval=0.01).run())
    deliver = PipelineDeliver(pipeline)
    rx = Receiver.build(opts, deliver)
    serving = asyncio.ensure_future(rx.serve())
    guest = UnixSink(opts.uri.removeprefix("unix:"), SocketOptions(backoff_initial=0.01), SinkContext())
    for batch in batches:
        await guest.send(batch)
    await guest.flush()
    await guest.aclose()
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await deliver.aclose()
    pipeline.close()
    await worker
    return out, rx, guest.refused


def test_guest_events_come_out_stamped_and_signed_by_the_host(tmp_path: Path) -> None:
    host_key = SigningKey.generate()
    guest_key = generate_keypair(tmp_path / "guest")
    path = tmp_path / "rx.sock"

    opts = ListenerOptions(uri=f"unix:{path}", guest_signatures="require",
                           trusted_keys=(str(tmp_path / "guest" / "host.pub"),))
    # the last one unsigned: refused under "require"
    out, rx, refused = run(through_a_host(opts, host_key, guest_events(50, guest_key), guest_events(1)))
    assert refused == 1
    assert rx.stats.rejected == {"unsigned": 1}
    bodies = [orjson.loads(e.body) for e in out.events]
    assert [b["id"] for b in bodies] == [f"g-{i}" for i in range(50)]
    first = bodies[0]
    assert first["hostid"] == "host-1" and first["hostpeer"] == ME and first["sequence"] == "1"
    assert [int(b["sequence"]) for b in bodies] == list(range(1, 51))
    host_view = verify_event(first, {host_key.keyid: host_key.verify_key()})
    assert host_view["hostpeer"] == ME
    assert "guestdssematerial" in first  # the guest's signature travels with the host's


def test_serve_listener_runs_until_cancelled(tmp_path: Path) -> None:
    class Pipe:
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def submit_guests(self, events: list[dict[str, Any]], hostpeer: str, frames: Any = None,
                                on_answer: Any = None) -> Any:
            self.seen.extend(e["id"] for e in events)
            return _Done()

    class _Done:
        def __init__(self) -> None:
            self.future = asyncio.get_running_loop().create_future()
            self.future.set_result(None)

    async def main() -> list[str]:
        pipe = Pipe()
        task = asyncio.ensure_future(serve_listener(ListenerOptions(uri=f"unix:{tmp_path}/s.sock"), pipe))
        while not (tmp_path / "s.sock").exists():
            await asyncio.sleep(0.001)
        sink = UnixSink(f"{tmp_path}/s.sock", SocketOptions(), SinkContext())
        await sink.send(guest_events(3))
        await sink.flush()
        await sink.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not (tmp_path / "s.sock").exists()
        return pipe.seen

    assert run(main()) == ["g-0", "g-1", "g-2"]


def test_an_unexpected_failure_of_one_submit_does_not_stop_the_ones_after_it() -> None:
    """The submitting task serves every connection of a listener: if it ended, every later frame would wait forever."""

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        async def submit_guests(self, events: Any, hostpeer: str, frames: Any = None, on_answer: Any = None) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("a bug somewhere below")
            return Receiptish()

    class Receiptish:
        def __init__(self) -> None:
            self.future = asyncio.get_running_loop().create_future()
            self.future.set_result(None)

    async def main() -> tuple[str, bool]:
        deliver = PipelineDeliver(Flaky())
        first = deliver({"id": "1"}, "p")
        second = deliver({"id": "2"}, "p")
        try:
            async with asyncio.timeout(5):
                await asyncio.wait({first})
                return str(first.exception()), await second
        finally:
            await deliver.aclose()

    failure, taken = run(main())
    assert "a bug somewhere below" in failure and taken is True


def test_events_the_host_cannot_stamp_are_refused_and_not_counted_as_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rx.sock"

    events = guest_events(6)
    for i in (1, 4):  # a date that does not exist: the receiver's checks pass it, stamping cannot
        ev = orjson.loads(events[i].body)
        ev["time"] = "2023-02-29T00:00:00Z"
        events[i] = Event(ev["id"], ev["source"], ev["type"], i, orjson.dumps(ev))
    out, rx, refused = run(through_a_host(ListenerOptions(uri=f"unix:{path}"), SigningKey.generate(), events))
    assert refused == 2
    assert [orjson.loads(e.body)["id"] for e in out.events] == ["g-0", "g-2", "g-3", "g-5"]
    assert rx.stats.rejected == {"attributes": 2}
    assert rx.stats.accepted == 4


def test_an_event_of_another_agent_on_this_host_keeps_its_source_and_says_where_it_came_from(
        tmp_path: Path) -> None:
    """Two agents of one host (agent A relaying to agent B) share the host id: A's own readings reach B with a
    source of B's own form. They are taken; what tells them from B's own readings is the signed ``hostpeer``
    (the host's own readings carry none), and they are numbered in B's sequence of that source."""
    path = tmp_path / "rx.sock"
    events = guest_events(2)
    ev = orjson.loads(events[1].body)
    ev["source"] = "hoststamp://host-1/cgroup"
    events[1] = Event(ev["id"], ev["source"], ev["type"], 1, orjson.dumps(ev))
    out, rx, refused = run(through_a_host(ListenerOptions(uri=f"unix:{path}"), SigningKey.generate(), events))
    assert refused == 0 and rx.stats.accepted == 2
    docs = {d["id"]: d for d in (orjson.loads(e.body) for e in out.events)}
    relayed = docs["g-1"]
    assert relayed["source"] == "hoststamp://host-1/cgroup" and relayed["hostpeer"].startswith("unix:uid=")
    assert "hostpeer" in relayed["signedextattrs"].split(",")


def test_a_relay_passes_its_downstreams_refusal_on_to_the_guest(tmp_path: Path) -> None:
    """guest -> host A (real pipeline, unix sink) -> host B, whose max_depth refuses one of A's events: the
    guest learns that event was refused (not an ack as taken), and A counts it as dropped.refused."""
    from agent.codec.framing import LengthPrefixedDecoder, encode_frame
    from agent.receiver import MemoryBatchDeliver
    from agent.transport import connect, decode_ack

    async def main() -> tuple[list[tuple[int, str]], int, dict[str, int], list[str], int]:
        b_path, a_path = tmp_path / "b.sock", tmp_path / "a.sock"
        b_got = MemoryBatchDeliver()
        b = asyncio.ensure_future(Receiver.build(ListenerOptions(uri=f"unix:{b_path}", max_depth=4), b_got).serve())
        queue = SinkQueue(1000)
        stats = PipelineStats()
        pipeline = Pipeline(Stamper(SigningKey.generate(), "host-a", SequenceStore(None)), [queue], stats)
        sink = UnixSink(str(b_path), SocketOptions(backoff_initial=0.01), SinkContext())
        worker = asyncio.ensure_future(SinkWorker(sink, queue, stats.sink(sink.uri), flush_interval=0.01).run())
        deliver = PipelineDeliver(pipeline)
        rx = Receiver.build(ListenerOptions(uri=f"unix:{a_path}"), deliver)
        a = asyncio.ensure_future(rx.serve())
        try:
            while not (a_path.exists() and b_path.exists()):
                await asyncio.sleep(0.01)
            deep: Any = {"x": {"y": {"z": {"w": 1}}}}  # within A's max_depth, beyond B's
            frames = [{"specversion": "1.0", "id": f"r-{i}", "source": "guest://vm/r", "type": "t",
                       "data": deep if i == 2 else {"i": i}} for i in (1, 2, 3)]
            stream = await connect(f"unix:{a_path}")
            await stream.send(b"".join(encode_frame(orjson.dumps(f)) for f in frames))
            dec, acks = LengthPrefixedDecoder(), []
            while not acks or acks[-1].count < 3:
                dec.feed(await stream.receive())
                acks.extend(decode_ack(f) for f in dec.frames())
            await stream.aclose()
            return ([r for ack in acks for r in ack.rejected], rx.stats.accepted, dict(queue.dropped), b_got.ids(),
                    rx.stats.dropped)
        finally:
            for t in (a, b):
                t.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
            await deliver.aclose()
            pipeline.close()
            await worker

    refused, accepted, dropped, at_b, rx_dropped = run(main())
    assert len(refused) == 1 and refused[0][0] == 2
    assert refused[0][1].startswith(f"dropped: refused by sink unix:{tmp_path / 'b.sock'}: depth: ")
    assert at_b == ["r-1", "r-3"] and accepted == 2 and rx_dropped == 1
    assert dropped == {"refused": 1}


def test_closing_fails_what_the_pipeline_never_took_even_when_the_close_is_cut_short() -> None:
    """A reload closes a listener under a cancellation that interrupts every await: batches still waiting to be
    submitted (a full `block` queue holds the one being submitted) must fail at once, or they and every later
    copy of their events (the duplicate window outlives the reload) would wait for ever."""
    from agent.errors import SinkError

    class Stuck:
        async def submit_guests(self, events: Any, hostpeer: str, frames: Any = None, on_answer: Any = None) -> Any:
            await asyncio.sleep(3600)  # a full block queue

    async def main() -> list[BaseException | None]:
        deliver = PipelineDeliver(Stuck())
        futs = [deliver.many([{"id": f"e{i}"}], "unix:uid=0,pid=1") for i in range(3)]
        await asyncio.sleep(0.05)  # the first is being submitted, the others wait

        async def listener() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                await deliver.aclose()

        task = asyncio.ensure_future(listener())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()  # again, inside aclose: as a cancelled scope does to every await
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.05)
        return [f.exception() if f.done() else None for f in futs]

    outcomes = asyncio.run(asyncio.wait_for(main(), 30))
    assert all(isinstance(e, SinkError) for e in outcomes), outcomes
