"""The live status line on a terminal: log lines written meanwhile start on a cleared line."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import anyio
import pytest

from agent.pipeline.queue import SinkQueue
from agent.pipeline.stats import PipelineStats
from agent.status import StatusLine


@pytest.mark.anyio
async def test_a_log_line_does_not_run_into_the_status_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("hoststamp")
    saved = log.handlers[:], log.level, log.propagate
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    try:
        status = StatusLine(PipelineStats(), [("stdout:", SinkQueue(10))], stream, live=True)
        with anyio.move_on_after(0.35):
            async with anyio.create_task_group() as tg:
                tg.start_soon(status.run, 0.1)
                await anyio.sleep(0.25)
                logging.getLogger("hoststamp.test").info("something happened")
        log.info("after the status line ended")
    finally:
        log.handlers[:], log.level, log.propagate = saved
    text = stream.getvalue()
    assert "probe errors 0INFO" not in text
    assert "probe errors 0\r\x1b[KINFO something happened\n" in text
    # once the status line is gone, log lines are written as they are
    assert text.endswith("\nINFO after the status line ended\n")


@pytest.mark.parametrize("sink", ["stdout:", "file:ev.ndjson"])
def test_no_live_status_line_between_events_on_the_same_terminal(tmp_path: Path, sink: str) -> None:
    """A ``stdout:`` sink writing to the terminal the status line is on: the line is left out (it would be
    rewritten in the middle of the events); with the events elsewhere it is shown."""
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT, run_cli

    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--probes", "link", "--sink", sink],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"running;" not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                seen += os.read(leader, 65536)
        # shown: until it comes (a second after "running;", later on a loaded machine); left out: two of its
        # periods without it
        end = time.monotonic() + (2.5 if sink == "stdout:" else 20)
        while time.monotonic() < end and not (sink != "stdout:" and b"events (" in seen):
            if select.select([leader], [], [], 0.2)[0]:
                seen += os.read(leader, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        os.close(leader)
    assert b"running;" in seen
    assert (b"events (" in seen) == (sink != "stdout:"), seen[-400:]


def test_a_second_sink_with_the_same_uri_shows_its_own_state() -> None:
    stats = PipelineStats()
    stats.sink("file:a", 2).healthy = False
    status = StatusLine(stats, [("file:a", SinkQueue(10)), ("file:a", SinkQueue(10))], io.StringIO(), live=False)
    assert "| file:a[q=0] file:a #2[q=0 DOWN] |" in status.render()


def test_sinks_whose_uris_differ_only_in_a_password_show_as_their_metrics_labels() -> None:
    """The password masked, the second numbered, each with its own state, as /metrics and the status name them."""
    stats = PipelineStats()
    stats.sink("nats://u:***@h:4222/s", 2).healthy = False
    status = StatusLine(stats, [("nats://u:one@h:4222/s", SinkQueue(10)), ("nats://u:two@h:4222/s", SinkQueue(10))],
                        io.StringIO(), live=False)
    line = status.render()
    assert "| nats://u:***@h:4222/s[q=0] nats://u:***@h:4222/s #2[q=0 DOWN] |" in line, line
    assert "one" not in line and "two" not in line
