"""The /metrics server reads request heads as RFC 9112 says: malformed field lines are a 400, an oversized head a
431 (a 414 for an oversized request line), each answered before the connection is closed. Real loopback sockets."""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest

from agent.health import AgentView
from agent.metrics import build_registry
from agent.metrics_http import MetricsServer
from agent.pipeline import PipelineStats

pytestmark = pytest.mark.anyio


def _view() -> AgentView:
    return AgentView(pipeline=PipelineStats(), probes=(), sinks=(), listeners=(), host_id="h1", keyid="ab" * 32,
                     config="/etc/x.toml", started_at=1000.0, generation=1, reloads_ok=0, reloads_failed=0,
                     last_reload_ok=True)


async def _ask(addr: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    """Send the whole request, then read the whole answer (to the server's close): its status and body."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(request)
        await writer.drain()
        with anyio.fail_after(10):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw[:200]
    assert b"\r\nconnection: close" in head.lower()
    return int(head.split()[1]), body


@pytest.fixture
async def addr() -> object:
    server = MetricsServer("127.0.0.1:0", build_registry(_view, process=False), request_timeout=5.0)
    async with anyio.create_task_group() as tg:
        yield await tg.start(server.serve)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("request_", [
    b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n application/openmetrics-text\r\n\r\n",  # folded, space
    b"GET /metrics HTTP/1.1\r\nAccept: text/plain,\r\n\tapplication/openmetrics-text\r\n\r\n",  # folded, tab
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n X-Folded: y\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nAccept : application/openmetrics-text\r\n\r\n",  # space before the colon
    b"GET /metrics HTTP/1.1\r\nAccept\t: text/plain\r\n\r\n",  # a tab before the colon
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n: no name\r\n\r\n",
], ids=["fold-space", "fold-tab", "fold-other", "space-colon", "tab-colon", "no-colon", "no-name"])
async def test_malformed_field_lines_are_a_400(addr: tuple[str, int], request_: bytes) -> None:
    status, body = await _ask(addr, request_)
    assert status == 400 and body == b"bad request\n"


async def test_well_formed_heads_are_still_served(addr: tuple[str, int]) -> None:
    status, body = await _ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept:text/plain \r\nX-Empty:\r\n\r\n")
    assert status == 200 and b"hoststamp_events_signed_total" in body


@pytest.mark.parametrize("shape", ["many-lines", "one-line"])
async def test_an_oversized_head_is_answered_431_then_closed(addr: tuple[str, int], shape: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """More than 64 KiB of header fields, as many lines or as one: 431, which the client gets in full."""
    if shape == "many-lines":
        fields = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(700))
    else:
        fields = b"X-Pad: " + b"a" * 70000 + b"\r\n"
    assert len(fields) > 65536
    with caplog.at_level(logging.WARNING, logger="hoststamp.metrics"):
        status, body = await _ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert status == 431 and body == b"request header fields too large\n"
    assert any("request header fields over" in r.getMessage() for r in caplog.records)
    # and the server goes on
    assert (await _ask(addr, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200


async def test_an_oversized_request_line_is_answered_414(addr: tuple[str, int]) -> None:
    status, body = await _ask(addr, b"GET /metrics?" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    assert status == 414 and body == b"request line too large\n"
