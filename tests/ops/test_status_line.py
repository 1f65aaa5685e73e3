"""The live status line on a terminal: log lines written meanwhile start on a cleared line."""

from __future__ import annotations

import io
import logging

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
