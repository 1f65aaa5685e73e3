"""The /metrics collector and server, in process: real registry, real loopback sockets."""

from __future__ import annotations

import asyncio
import gzip
import logging

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.health import AgentView, ListenerView, SinkView
from agent.metrics import LatencySampler, TimedStamper, build_registry
from agent.metrics_http import MetricsServer
from agent.model import Reading
from agent.pipeline import PipelineStats, SequenceStore, Stamper
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey

pytestmark = pytest.mark.anyio


def _view(stats: PipelineStats) -> AgentView:
    sink_stats = stats.sink("file:/x")
    sink_stats.sent, sink_stats.send_errors, sink_stats.healthy, sink_stats.duplicates = 40, 2, False, 6
    p = stats.probe("cgroup")
    p.runs, p.failures, p.readings, p.last_duration, p.last_success = 5, 1, 50, 0.25, False
    return AgentView(
        pipeline=stats, probes=("cgroup",),
        sinks=(SinkView("file:/x", depth=7, capacity=100, enqueued=47, dropped={"queue_full": 3}, stats=sink_stats,
                        spool_bytes=4096, in_hand=2, spool_capacity=1 << 20),),
        listeners=(ListenerView("unix:/run/in.sock", accepted=9, duplicates=1, connections=4, connections_open=2,
                                rejected={"json": 5}),),
        host_id="h1", keyid="ab" * 32, config="/etc/x.toml", started_at=1000.0, generation=3,
        reloads_ok=2, reloads_failed=1, last_reload_ok=False,
    )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_collector_exports_the_counters_read_at_scrape_time() -> None:
    from prometheus_client import generate_latest

    stats = PipelineStats(signed=123)
    sampler = LatencySampler(every=1)
    for d in (30e-6, 60e-6, 2.0):
        sampler.observe(d)
    reg = build_registry(lambda: _view(stats), sampler, process=False)
    s = _samples(generate_latest(reg).decode())
    assert s[("hoststamp_events_signed_total", ())] == 123
    assert s[("hoststamp_probe_success", (("probe", "cgroup"),))] == 0
    assert s[("hoststamp_probe_duration_seconds", (("probe", "cgroup"),))] == 0.25
    assert s[("hoststamp_probe_failures_total", (("probe", "cgroup"),))] == 1
    assert s[("hoststamp_sink_events_enqueued_total", (("sink", "file:/x"),))] == 47
    assert s[("hoststamp_sink_events_sent_total", (("sink", "file:/x"),))] == 40
    assert s[("hoststamp_sink_events_duplicate_total", (("sink", "file:/x"),))] == 6
    assert s[("hoststamp_sink_events_dropped_total", (("reason", "queue_full"), ("sink", "file:/x")))] == 3
    assert s[("hoststamp_sink_events_dropped_total", (("reason", "evicted"), ("sink", "file:/x")))] == 0
    assert s[("hoststamp_sink_queue_depth", (("sink", "file:/x"),))] == 7
    assert s[("hoststamp_sink_events_in_hand", (("sink", "file:/x"),))] == 2
    assert s[("hoststamp_sink_spool_capacity_bytes", (("sink", "file:/x"),))] == 1 << 20
    assert s[("hoststamp_sink_spool_bytes", (("sink", "file:/x"),))] == 4096
    assert s[("hoststamp_sink_up", (("sink", "file:/x"),))] == 0
    assert s[("hoststamp_receiver_connections_open", (("listener", "unix:/run/in.sock"),))] == 2
    json_rej = (("listener", "unix:/run/in.sock"), ("reason", "json"))
    assert s[("hoststamp_receiver_frames_rejected_total", json_rej)] == 5
    frame_rej = (("listener", "unix:/run/in.sock"), ("reason", "frame"))
    assert s[("hoststamp_receiver_frames_rejected_total", frame_rej)] == 0
    assert s[("hoststamp_sign_duration_seconds_count", ())] == 3
    assert s[("hoststamp_sign_duration_seconds_bucket", (("le", "5e-05"),))] == 1
    assert s[("hoststamp_sign_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert s[("hoststamp_config_reloads_total", (("result", "failure"),))] == 1
    assert s[("hoststamp_config_last_reload_successful", ())] == 0
    assert s[("hoststamp_config_generation", ())] == 3
    # counters move when the stats do, with no registration on the hot path
    stats.signed += 1
    assert _samples(generate_latest(reg).decode())[("hoststamp_events_signed_total", ())] == 124


def test_latency_sampler_buckets_are_cumulative_and_le() -> None:
    s = LatencySampler((1.0, 2.0), every=4)
    for v in (0.5, 1.0, 1.5, 3.0):
        s.observe(v)
    assert s.cumulative() == [("1.0", 2.0), ("2.0", 3.0), ("+Inf", 4.0)]
    assert s.count == 4 and s.sum == 6.0
    with pytest.raises(ValueError):
        LatencySampler(every=0)


def _reading(i: int) -> Reading:
    return Reading(probe="cgroup", subject=f"/s{i}", output={"i": i}, inputs=["/sys/fs/cgroup/x"],
                   probe_source="test")


def test_timed_stamper_times_one_in_n_and_signs_the_same(host_key: SigningKey) -> None:
    sampler = LatencySampler(every=8)
    timed = TimedStamper(host_key, "h1", SequenceStore(None), sampler=sampler)
    events = [timed.stamp(_reading(i)) for i in range(20)]
    assert sampler.count == 2
    guest = {"specversion": "1.0", "id": "g1", "source": "guest://vm", "type": "t", "data": {"a": 1}}
    for _ in range(4):
        events.append(timed.stamp_guest(guest, "vsock:7"))
    assert sampler.count == 3 and sampler.sum > 0
    keys = {host_key.keyid: host_key.verify_key()}
    import orjson

    for e in events:
        verify_event(orjson.loads(e.body), keys)
    assert [e.sequence for e in events[:20]] == list(range(1, 21))
    plain = Stamper(host_key, "h1", SequenceStore(None)).stamp(_reading(0))
    assert plain.source == events[0].source and plain.type == events[0].type


async def _http(addr: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(request)
    await writer.drain()
    with anyio.fail_after(5):
        raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_server_serves_text_openmetrics_gzip_and_refuses_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    stats = PipelineStats(signed=5)
    server = MetricsServer("127.0.0.1:0", build_registry(lambda: _view(stats)), request_timeout=1.0)
    async with anyio.create_task_group() as tg:
        addr = await tg.start(server.serve)
        status, headers, body = await _http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b"hoststamp_events_signed_total 5.0" in body and b"process_cpu_seconds_total" in body
        assert int(headers["content-length"]) == len(body)

        status, headers, body = await _http(
            addr, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n"
                  b"Accept-Encoding: gzip\r\n\r\n")
        assert status == 200 and headers["content-encoding"] == "gzip"
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert gzip.decompress(body).endswith(b"# EOF\n")

        status, headers, body = await _http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        assert (await _http(addr, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
        assert (await _http(addr, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await _http(addr, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405

        with caplog.at_level(logging.WARNING, logger="hoststamp.metrics"):
            for _ in range(3):  # garbage from one peer: 400, logged once
                assert (await _http(addr, b"\x16\x03\x01 not http at all\r\n\r\n"))[0] == 400
            # a peer that never finishes its request is cut off after the timeout
            reader, writer = await asyncio.open_connection(*addr)
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            with anyio.fail_after(5):
                assert await reader.read() == b""
            writer.close()
        bad = [r for r in caplog.records if "bad request" in r.getMessage()]
        assert len(bad) == 1, [r.getMessage() for r in bad]
        assert server.scrapes == 3
        tg.cancel_scope.cancel()


async def test_idle_connections_never_keep_a_scrape_out() -> None:
    """More idle connections than the limit (each sending nothing): the oldest idle one makes room, and a scrape
    or a health check is served all the same."""
    server = MetricsServer("127.0.0.1:0", build_registry(lambda: _view(PipelineStats()), process=False),
                           max_connections=8, request_timeout=30.0)
    async with anyio.create_task_group() as tg:
        addr = await tg.start(server.serve)
        idle = [await asyncio.open_connection(*addr) for _ in range(20)]
        await asyncio.sleep(0.05)
        for _ in range(3):
            assert (await _http(addr, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
            assert (await _http(addr, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 200
        closed = 0
        for reader, writer in idle:  # the oldest were closed to make room
            with anyio.move_on_after(0.5):
                closed += await reader.read() == b""
            writer.close()
        assert closed >= 12
        tg.cancel_scope.cancel()


async def test_requests_as_http_allows_them() -> None:
    """Bare LF line ends, the absolute form of the target, and the q-values of Accept-Encoding."""
    server = MetricsServer("127.0.0.1:0", build_registry(lambda: _view(PipelineStats()), process=False))
    async with anyio.create_task_group() as tg:
        addr = await tg.start(server.serve)
        assert (await _http(addr, b"GET /healthz HTTP/1.1\nHost: x\n\n"))[0] == 200
        assert (await _http(addr, b"GET http://127.0.0.1/healthz HTTP/1.1\r\n\r\n"))[0] == 200
        for enc, gz in (("gzip;q=0, identity", False), ("GZIP", True), ("br, *;q=0.5", True), ("*;q=0", False),
                        ("deflate, gzip;q=0.8", False),  # identity, not named, is wanted at q=1: more than gzip
                        ("gzip;q=0.5, identity;q=1", False), ("gzip;q=0.5, *;q=0.6", False),  # * sets identity's
                        ("gzip;q=0.5, *;q=0.2", True), ("identity;q=0, gzip;q=0.1", True),
                        ("x-gzip;q=0.7, identity;q=0.7", True), ("", False)):
            status, headers, _ = await _http(addr, f"GET /metrics HTTP/1.1\r\nAccept-Encoding: {enc}\r\n\r\n"
                                             .encode())
            assert status == 200 and (headers.get("content-encoding") == "gzip") == gz, enc
        tg.cancel_scope.cancel()


async def test_port_in_use_raises_at_start() -> None:
    first = MetricsServer("127.0.0.1:0", build_registry(lambda: _view(PipelineStats()), process=False))
    host, port = await first.start()
    second = MetricsServer(f"{host}:{port}", build_registry(lambda: _view(PipelineStats()), process=False))
    with pytest.raises(OSError):
        await second.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.serve)
        await anyio.sleep(0)
        tg.cancel_scope.cancel()



def test_a_password_in_a_uri_is_shown_nowhere(capsys: pytest.CaptureFixture[str]) -> None:
    """A NATS sink configured as nats://user:password@host/...: metrics labels, the status and log lines show
    the URI without its password."""
    from agent.health import listener_view, sink_views
    from agent.logs import configure
    from agent.pipeline import SinkQueue

    secret = "nats://alice:s3cr3t@127.0.0.1:4222/a.b"
    stats = PipelineStats()
    (sink,) = sink_views([((secret, 1), SinkQueue(10), None, False, 0)], stats, {})
    listener = listener_view(secret.replace("a.b", "in.>"), [])
    assert sink.uri == "nats://alice:***@127.0.0.1:4222/a.b" and "s3cr3t" not in listener.uri
    configure("json")
    try:
        logging.getLogger("hoststamp.test").warning("sink %s: Authorization Violation", secret)
    finally:
        configure()
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "alice:***@127.0.0.1" in err


@pytest.mark.parametrize(("text", "shown"), [
    ("nats://alice:PW a8@127.0.0.1:4/ok", "nats://alice:***@127.0.0.1:4/ok"),  # a space in the password
    ("'nats://u%20s:HUP 2@h:14222/ev.x': white space", "'nats://u%20s:***@h:14222/ev.x': white space"),
    ("nats://tokenSECRET@127.0.0.1:4222/ev", "nats://***@127.0.0.1:4222/ev"),  # a token is the credential
    ("expected nats://HOST:PORT/SUBJECT, got nats:/alice:PWb1@h:4/ok", "expected nats://HOST:PORT/SUBJECT, got "
                                                                      "nats:/alice:***@h:4/ok"),
    ("nats://u:p@ss@h:1/s", "nats://u:***@h:1/s"),
    ("sink nats://127.0.0.1:4222/a.b: connected", "sink nats://127.0.0.1:4222/a.b: connected"),
    ("file:/tmp/a@b", "file:/tmp/a@b"),
])
def test_no_credential_of_a_uri_is_shown(text: str, shown: str) -> None:
    from agent.errors import redact

    assert redact(text) == shown


_PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;"
                      "q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


@pytest.mark.parametrize(("accept", "openmetrics"), [
    ("application/openmetrics-text; version=1.0.0", True),
    ("APPLICATION/OpenMetrics-Text", True),
    (_PROMETHEUS_ACCEPT, True),
    ("text/plain, application/openmetrics-text", True),  # as wanted as the text format, and named
    ("text/plain;q=0.5, application/openmetrics-text;q=0.9", True),
    # a version it does not write (or cannot read) is not OpenMetrics it can serve: the text format
    ("application/openmetrics-text; version=abc", False),
    ("application/openmetrics-text;version=2.0.0", False),
    ("application/openmetrics-text;version=1.2.3, application/openmetrics-text;version=01.0.0", False),
    ("application/openmetrics-text;version=2.0.0, */*;q=0.1", False),  # */* wants both alike: the text format
    ("application/openmetrics-text;version=2.0.0;q=0.9, application/openmetrics-text;q=0.5", True),  # any version
    ("application/openmetrics-text;version=2.0.0, application/openmetrics-text;version=1.0.0;q=0.1", True),
    # the range naming the version decides for it, over the type without one
    ("application/openmetrics-text;version=1.0.0;q=0, application/openmetrics-text;q=0.5", False),
    ("application/openmetrics-text;q=0, application/openmetrics-text;version=1.0.0;q=0.5", True),
    # q=0: not acceptable, whatever the case and the white space around it
    ("application/openmetrics-text;q=0", False),
    ("application/openmetrics-text; version=1.0.0; q=0, text/plain", False),
    ("Application/OpenMetrics-Text ; Version=1.0.0 ; Q = 0.000 , */*;q=0.1", False),
    ("application/openmetrics-text;q=0, application/*", False),  # the most specific range decides
    ("text/plain;q=0.9, application/openmetrics-text;q=0.5", False),  # the higher q wins
    ("application/openmetrics-text;q=abc, text/plain", False),  # a q that is no number is taken as 0
    ("*/*", False),
    ("", False),
    ("application/json", False),  # nothing it can serve: the text format
])
def test_accept_is_negotiated_by_q_value(accept: str, openmetrics: bool) -> None:
    from agent.metrics_http import negotiate

    encoder, ctype = negotiate(accept)
    body = encoder(build_registry(lambda: _view(PipelineStats()), process=False))
    # the Content-Type names the version the body is in, whatever version was asked for
    assert ctype.startswith("application/openmetrics-text; version=1.0.0;" if openmetrics
                            else "text/plain; version=0.0.4;"), ctype
    assert body.endswith(b"# EOF\n") == openmetrics


@pytest.mark.parametrize(("accept", "ctype"), [
    ("text/plain;version=1.0.0", "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("text/plain;version=1.0.0;escaping=allow-utf-8", "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
    ("text/plain;version=2.0.0", "text/plain; version=0.0.4; charset=utf-8"),
    ("text/*, text/plain;version=0.0.4;q=0", "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"),
    ("application/openmetrics-text", "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
])
def test_the_content_type_names_the_version_served(accept: str, ctype: str) -> None:
    from agent.metrics_http import negotiate

    assert negotiate(accept)[1] == ctype


async def test_a_scraper_that_refuses_openmetrics_gets_text() -> None:
    server = MetricsServer("127.0.0.1:0", build_registry(lambda: _view(PipelineStats()), process=False))
    async with anyio.create_task_group() as tg:
        addr = await tg.start(server.serve)
        status, headers, body = await _http(
            addr, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0; q=0, "
                  b"text/plain;q=0.5\r\n\r\n")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b"# EOF" not in body and b"hoststamp_events_signed_total" in body
        tg.cancel_scope.cancel()


async def test_several_header_lines_of_one_field_are_read_as_one_list() -> None:
    """Two Accept lines, two Accept-Encoding lines: each pair is one comma-separated list (RFC 9110 section 5.3),
    not its last line alone; every /metrics answer says what it varies by."""
    server = MetricsServer("127.0.0.1:0", build_registry(lambda: _view(PipelineStats()), process=False))
    async with anyio.create_task_group() as tg:
        addr = await tg.start(server.serve)
        status, headers, body = await _http(
            addr, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n"
                  b"Accept: text/plain;q=0.5\r\nAccept-Encoding: gzip\r\nAccept-Encoding: br\r\n\r\n")
        assert status == 200 and headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert headers["content-encoding"] == "gzip" and gzip.decompress(body).endswith(b"# EOF\n")
        assert headers["vary"] == "Accept, Accept-Encoding"
        # a version of OpenMetrics the agent does not write: the text format, labelled as such
        status, headers, body = await _http(
            addr, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=2.0.0\r\n\r\n")
        assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert b"# EOF" not in body and headers["vary"] == "Accept, Accept-Encoding"
        status, headers, _ = await _http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert status == 200 and headers["vary"] == "Accept, Accept-Encoding" and "content-encoding" not in headers
        tg.cancel_scope.cancel()
