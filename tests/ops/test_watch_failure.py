"""A probe's change events that fail become an error reading; the agent and the other probes go on."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
import pytest

from agent.app import Agent
from agent.config import parse
from agent.probes.base import Emit
from agent.probes.link import LinkProbe
from agent.signing.keys import SigningKey

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]



async def test_a_watch_that_raises_is_an_error_reading_not_the_end_of_the_agent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: LinkProbe, emit: Emit) -> None:
        raise ValueError("embedded null byte")

    monkeypatch.setattr(LinkProbe, "watch", broken)
    out = tmp_path / "out.ndjson"
    lve = tmp_path / "lve.list"
    lve.write_text("")
    cfg = parse({"agent": {"state_dir": str(tmp_path / "state")},
                 "probes": {"link": {"interval": 0.2, "include": ["lo"]}, "lve": {"interval": 0.2, "path": str(lve)},
                            "cgroup": {"enabled": False}, "mounts": {"enabled": False},
                            "taskstats": {"enabled": False}},
                 "sinks": [{"uri": f"file:{out}"}]})
    agent = Agent(cfg, SigningKey.generate())

    def types() -> list[tuple[str, str | None]]:
        if not out.exists():
            return []
        return [(e["type"], e["data"].get("error")) for e in map(orjson.loads, out.read_bytes().splitlines())]

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run)
        with anyio.fail_after(20):
            # the error reading, and rounds of both probes after it
            while not (("io.hoststamp.host.v1.link", "change events stopped: embedded null byte") in types()
                       and sum(t == "io.hoststamp.host.v1.lve" for t, _ in types()) >= 3
                       and sum(t == "io.hoststamp.host.v1.link" and e is None for t, e in types()) >= 3):
                await anyio.sleep(0.05)
        agent.stop()
