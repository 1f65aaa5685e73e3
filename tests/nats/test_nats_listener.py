"""The ``nats://`` listener: a durable pull consumer against a real JetStream server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.js import JetStreamContext

from agent.codec.nats import to_binary
from agent.config import ListenerOptions
from agent.pipeline import SequenceStore, Stamper
from agent.receiver.glue import PipelineDeliver
from agent.receiver.nats import NatsSource
from agent.receiver.policy import GuestPolicy
from agent.signing.keys import SigningKey
from agent.sinks import registry
from agent.sinks.base import SinkContext
from agent.sinks.memory import MemorySink
from agent.sinks.nats import NatsOptions, NatsSink
from agent.transport import Backoff
from tests.nats.helpers import Rig, until
from tests.nats.server import NatsServer

pytestmark = pytest.mark.anyio

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def guest(i: int, source: str = "guest://vm1/app") -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"g-{i}", "source": source, "type": "io.example.v1",
            "time": "2026-11-22T01:00:00Z", "data": {"i": i}}


@asynccontextmanager
async def publisher(server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(server.url, connect_timeout=2, allow_reconnect=False)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def publish(js: JetStreamContext, events: list[dict[str, Any]], *, binary: bool = False,
                  subject: str = "guests.vm1") -> None:
    for e in events:
        if binary:
            headers, payload = to_binary(e)
            await js.publish(subject, payload, headers=headers, timeout=5)
        else:
            await js.publish(subject, orjson.dumps(e), headers=dict(STRUCTURED), timeout=5)


@asynccontextmanager
async def listening(server: NatsServer, sink: MemorySink, query: str = "create=1&stream=IN",
                    **opts: Any) -> AsyncIterator[tuple[NatsSource, Rig]]:
    rig = Rig([sink])
    rig.start()
    options = ListenerOptions(uri=f"{server.url}/guests.>?{query}", **opts)
    source = NatsSource(options, PipelineDeliver(rig.pipeline), backoff=Backoff(0.05, 0.3))
    task = asyncio.ensure_future(source.serve())
    try:
        yield source, rig
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rig.stop()


async def consumer_state(server: NatsServer) -> tuple[int, int]:
    """(messages not yet delivered, delivered and not acked) of the durable consumer."""
    async with publisher(server) as js:
        info = await js.consumer_info("IN", "hoststamp")
        return info.num_pending, info.num_ack_pending


async def settled(server: NatsServer, timeout: float = 10.0) -> bool:
    """True once the consumer has nothing pending and nothing unacked (acks travel one way: poll)."""
    state = (-1, -1)
    for _ in range(int(timeout / 0.05)):
        state = await consumer_state(server)
        if state == (0, 0):
            return True
        await asyncio.sleep(0.05)
    raise AssertionError(f"consumer still has (pending, unacked) = {state}")


async def test_structured_and_binary_events_are_stamped_and_acked(nats_server: NatsServer) -> None:
    sink = MemorySink()
    async with listening(nats_server, sink) as (source, _rig):
        async with publisher(nats_server) as js:
            await _wait_stream(js)
            await publish(js, [guest(i) for i in range(20)])
            await publish(js, [guest(i) for i in range(20, 40)], binary=True, subject="guests.vm2")
            await publish(js, [guest(3)], subject="guests.vm1")  # a copy the guest sent again
            await js.publish("guests.vm1", b"{not json", headers=dict(STRUCTURED))
            await js.publish("guests.vm1", orjson.dumps({"specversion": "1.0", "id": "x"}), headers=dict(STRUCTURED))
            await js.publish("guests.vm1", b"", headers={"ce-id": "%C0%A0", "ce-specversion": "1.0"})
            # passes the listener's checks, but its date does not exist: the stamper refuses it
            await publish(js, [dict(guest(99), time="2023-02-29T00:00:00Z")])
        await until(lambda: source.acked + source.terminated == 45, what="every message settled")
        assert await settled(nats_server)
    events = [orjson.loads(e.body) for e in sink.events]
    assert sorted(e["id"] for e in events) == sorted(f"g-{i}" for i in range(40))
    peers = {e["id"]: e["hostpeer"] for e in events}
    assert peers["g-0"] == "nats:guests.vm1" and peers["g-39"] == "nats:guests.vm2"
    assert all(e["hostid"] == "host.example" for e in events)
    assert {e["id"]: e["data"] for e in events}["g-25"] == {"i": 25}
    assert (source.acked, source.terminated, source.stats.duplicates) == (41, 4, 1)
    assert source.stats.rejected == {"json": 1, "attributes": 3}
    assert source.stats.accepted == 40


async def _wait_stream(js: JetStreamContext) -> None:
    for _ in range(250):
        try:
            await js.stream_info("IN")
            return
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.02)
    raise AssertionError("the listener did not create its stream")


async def test_messages_are_acked_only_once_the_local_sinks_have_them(nats_server: NatsServer) -> None:
    sink = MemorySink()
    sink.fail_sends = 10**9  # the local sink is down
    async with listening(nats_server, sink, "create=1&stream=IN&ack_wait=2") as (source, rig):
        async with publisher(nats_server) as js:
            await _wait_stream(js)
            await publish(js, [guest(i) for i in range(30)])
        await until(lambda: rig.stats.signed == 30, what="30 events stamped")
        await until(lambda: rig.stats.sink(sink.uri).send_errors >= 3, what="the sink failing")
        await asyncio.sleep(2.6)  # past ack_wait: only the in-progress beats keep the server from redelivering
        assert source.acked == 0 and sink.events == []
        assert source.stats.duplicates == 0
        assert await consumer_state(nats_server) == (0, 30)
        sink.fail_sends = 0  # the sink comes back
        await until(lambda: source.acked == 30, what="30 acks")
        assert await settled(nats_server)
        assert source.stats.accepted == 30
    assert len(sink.events) == 30


async def test_what_the_listener_took_is_acked_as_it_is_delivered_while_it_finishes(nats_server: NatsServer) -> None:
    """Shutting down: no more is taken, and what was taken is acked once delivered, before the listener is
    cancelled; else it would come back after ack_wait and be stamped again (a duplicate downstream)."""
    sink = MemorySink()
    sink.fail_sends = 10**9  # the local sink confirms nothing yet
    async with listening(nats_server, sink, "create=1&stream=IN") as (source, rig):
        async with publisher(nats_server) as js:
            await _wait_stream(js)
            await publish(js, [guest(i) for i in range(5)])
            await until(lambda: rig.stats.signed == 5, what="5 events stamped")
            finishing = asyncio.ensure_future(source.finish(20.0))
            await asyncio.sleep(0.3)
            assert not finishing.done() and source.acked == 0  # it waits for what it took
            await publish(js, [guest(5)])  # comes as it stops: not taken
            sink.fail_sends = 0  # the sink delivers during the drain
            await asyncio.wait_for(finishing, 20.0)
        assert source.acked == 5 and rig.stats.signed == 5
        assert await consumer_state(nats_server) in ((1, 0), (0, 1))  # the late one is the next consumer's
    assert sorted(orjson.loads(e.body)["id"] for e in sink.events) == [f"g-{i}" for i in range(5)]


async def test_the_consumer_survives_a_server_restart(nats_server: NatsServer) -> None:
    sink = MemorySink()
    async with listening(nats_server, sink, "create=1&stream=IN&batch=16&ack_wait=1") as (source, _rig):
        async with publisher(nats_server) as js:
            await _wait_stream(js)
            await publish(js, [guest(i) for i in range(100)])
        await until(lambda: source.acked == 100, what="the first 100 acked")
        assert source.stats.healthy
        await asyncio.to_thread(nats_server.kill)
        await until(lambda: not source.stats.healthy, what="the listener down")  # hoststamp_listener_up 0
        assert source.stats.last_error
        await asyncio.to_thread(nats_server.start)
        await until(lambda: source.stats.healthy, what="the listener up again")
        async with publisher(nats_server) as js:
            await _wait_stream(js)
            await publish(js, [guest(i) for i in range(100, 200)])
        await until(lambda: len(sink.events) >= 200, what="all 200 events")
        # an ack lost with the server comes back as a redelivery after ack_wait; the dedupe window acks it
        assert await settled(nats_server)
    ids = [orjson.loads(e.body)["id"] for e in sink.events]
    assert len(ids) == len(set(ids)) == 200


async def test_guest_signatures_can_be_required(nats_server: NatsServer) -> None:
    guest_key = SigningKey.generate()
    signed = orjson.loads(Stamper(guest_key, "vm1", SequenceStore(None)).stamp_guest(guest(1), "inside").body)
    vk = guest_key.verify_key()
    sink = MemorySink()
    rig = Rig([sink])
    rig.start()
    options = ListenerOptions(uri=f"{nats_server.url}/guests.>?create=1&stream=IN")
    source = NatsSource(options, PipelineDeliver(rig.pipeline), policy=GuestPolicy("require", {vk.keyid: vk}))
    task = asyncio.ensure_future(source.serve())
    try:
        async with publisher(nats_server) as js:
            await _wait_stream(js)
            await publish(js, [signed, guest(2)])
        await until(lambda: source.acked + source.terminated == 2, what="both settled")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rig.stop()
    assert (source.acked, source.terminated) == (1, 1)
    assert source.stats.rejected == {"unsigned": 1}


async def test_a_message_over_max_frame_is_terminated(nats_server: NatsServer) -> None:
    sink = MemorySink()
    async with listening(nats_server, sink, max_frame=300) as (source, _rig):
        async with publisher(nats_server) as js:
            await _wait_stream(js)
            big = guest(1)
            big["data"] = {"pad": "x" * 400}
            await publish(js, [big, guest(2)])
        await until(lambda: source.acked + source.terminated == 2, what="both settled")
        assert await settled(nats_server)
    assert (source.acked, source.terminated) == (1, 1)
    assert source.stats.rejected == {"frame": 1}
    assert [orjson.loads(e.body)["id"] for e in sink.events] == ["g-2"]


async def test_an_event_no_sink_can_carry_is_terminated_not_redelivered(nats_server: NatsServer,
                                                                       tmp_path: Path) -> None:
    """A guest event larger than the sink's server takes is dropped for good: the message is terminated (a
    nak would bring it back every second, for ever) and counted as dropped, while the others are acked."""
    from tests.nats.server import find_binary

    binary = find_binary()
    assert binary is not None
    small = NatsServer(binary, tmp_path / "small", config="max_payload: 4096")
    small.start()
    try:
        sink = NatsSink(registry.split_uri(f"{small.url}/out.x")[1], NatsOptions(create_stream="OUT"), SinkContext())
        async with listening(nats_server, sink) as (source, rig):
            async with publisher(nats_server) as js:
                await _wait_stream(js)
                big = guest(1)
                big["data"] = {"pad": "x" * 8000}
                await publish(js, [guest(0), big, guest(2)])
            await until(lambda: source.acked + source.terminated == 3, what="all three settled")
            assert await settled(nats_server)
            await asyncio.sleep(1.5)  # past the nak delay: a nak'ed message would have come back by now
            assert (source.acked, source.terminated, source.naked) == (2, 1, 0)
            assert source.stats.dropped == 1 and source.stats.accepted == 2
            assert source.stats.rejected == {"dropped": 1}
            assert rig.queues[0].dropped == {"too_large": 1}
    finally:
        small.kill()


async def test_a_durable_left_with_other_settings_is_brought_to_the_configured_ones(nats_server: NatsServer) -> None:
    """A consumer an earlier run made with another ack wait, limit of unacked messages and subject is updated
    (it used to keep its old settings, silently), and consumes what the listener's subject names."""
    from nats.js.api import AckPolicy, ConsumerConfig

    async with publisher(nats_server) as js:
        await js.add_stream(name="IN", subjects=["guests.>"])
        await js.add_consumer("IN", config=ConsumerConfig(
            name="hoststamp", durable_name="hoststamp", ack_policy=AckPolicy.EXPLICIT, ack_wait=5.0,
            max_ack_pending=7, filter_subject="guests.old"))
        await publish(js, [guest(i) for i in range(5)])
    sink = MemorySink()
    async with listening(nats_server, sink, "stream=IN&ack_wait=12&max_inflight=64") as (source, _rig):
        await until(lambda: source.acked == 5, what="five acks")
        async with publisher(nats_server) as js:
            config = (await js.consumer_info("IN", "hoststamp")).config
    assert (config.ack_wait, config.max_ack_pending, config.filter_subject) == (12.0, 64, "guests.>")
    assert sorted(orjson.loads(e.body)["id"] for e in sink.events) == [f"g-{i}" for i in range(5)]


async def test_a_durable_that_does_not_ack_explicitly_is_refused_by_name(nats_server: NatsServer) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    from agent.errors import TransportError
    from agent.receiver.nats import NatsSourceSettings, _ensure_consumer

    async with publisher(nats_server) as js:
        await js.add_stream(name="IN", subjects=["guests.>"])
        await js.add_consumer("IN", config=ConsumerConfig(name="hoststamp", durable_name="hoststamp",
                                                          ack_policy=AckPolicy.NONE))
        settings = NatsSourceSettings.from_uri(f"{nats_server.url}/guests.>?stream=IN")
        with pytest.raises(TransportError, match="consumer hoststamp on IN acks none, not explicitly"):
            await _ensure_consumer(js, settings)
