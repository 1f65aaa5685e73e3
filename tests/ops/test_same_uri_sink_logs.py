"""Two sinks with the same URI are told apart in the log as in /metrics and the status: the second (and any
later one) by its label, ``URI #2``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.model import Event
from agent.sinks.base import SinkContext
from agent.sinks.socket import SocketOptions, UnixSink
from tests.helpers import run_cli
from tests.ops.agentproc import config_text


def test_the_startup_line_and_each_sinks_summary_name_it_by_its_label(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    out = f"file:{tmp_path / 'z.ndjson'}"
    (tmp_path / "c.toml").write_text(config_text([out, out], metrics=False))
    res = run_cli(["run", "--config", "c.toml", "--once"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    log = res.stderr.decode()
    assert f"sinks={out},{out} #2 " in log, log
    assert f"sink {out}: sent=" in log and f"sink {out} #2: sent=" in log, log


def test_a_socket_sinks_own_connection_lines_name_it_by_its_label(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The sender of a socket sink logs its connection failures under the sink's label, not its bare URI."""
    down = tmp_path / "nobody.sock"

    async def main() -> None:
        sink = UnixSink(str(down), SocketOptions(connect_timeout=0.2, backoff_initial=0.05, backoff_max=0.1),
                        SinkContext())
        sink.label = f"unix:{down} #2"
        await sink.open()
        await sink.sender.put([Event("e-1", "test://x", "t", 1, b'{"id":"e-1"}')], timeout=1)  # something to send
        try:
            for _ in range(100):
                if any("retrying with backoff" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
        finally:
            await sink.sender.aclose()

    with caplog.at_level(logging.WARNING, logger="agent.transport"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if "retrying with backoff" in r.getMessage()]
    assert lines and all(line.startswith(f"unix:{down} #2: ") for line in lines), lines
    assert all(line.count(f"unix:{down}") == 1 for line in lines), lines  # named once, by its label


def test_a_socket_sinks_failures_do_not_repeat_its_name(tmp_path: Path) -> None:
    """The worker's log line names the sink (``sink LABEL: ...``): the errors the sink raises do not again."""
    from agent.errors import SinkError

    async def main() -> str:
        sink = UnixSink(str(tmp_path / "nobody.sock"),
                        SocketOptions(connect_timeout=0.1, ack_timeout=0.3, backoff_initial=0.05, backoff_max=0.1),
                        SinkContext())
        sink.label = f"unix:{tmp_path / 'nobody.sock'} #2"
        await sink.open()
        await sink.send([Event("e-1", "test://x", "t", 1, b'{"id":"e-1"}')])
        try:
            await sink.flush()
        except SinkError as exc:
            return str(exc)
        finally:
            await sink.sender.aclose()
        return ""

    said = asyncio.run(main())
    assert "not acknowledged" in said and "nobody.sock" not in said.split("(")[0], said
