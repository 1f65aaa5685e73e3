"""A reload that changes the exit stream's own options (``exit_buffer``) opens a new stream, after the old one
closed: the exits between the two go unseen, and one error reading says so. A reload that keeps them hands the
stream on, and says nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, wait_for


def _restarts(out: Path) -> list[dict[str, object]]:
    return [e for e in map(orjson.loads, out.read_bytes().splitlines())
            if e["type"].endswith(".taskstats.exit") and e["data"]["output"].get("change") == "restarted"]


def test_a_reload_that_opens_a_new_exit_stream_says_exits_went_unseen(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the exit stream needs CAP_NET_ADMIN")
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    cfg = tmp_path / "a.toml"
    out = tmp_path / "out.ndjson"
    base = config_text([f"file:{out}"]).replace(
        "[probes.taskstats]\nenabled = false\n",
        '[probes.taskstats]\ninterval = 3600\npids = [1]\ncommands = ["hs-none"]\nexits = true\n')
    cfg.write_text(base)
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        agent.signal(signal.SIGHUP)  # the same options: the stream goes on
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, what="the first reload")
        cfg.write_text(base.replace("exits = true\n", "exits = true\nexit_buffer = 128\n"))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: len(_restarts(out)) == 1, what="the restarted stream's reading")
        assert agent.stop() == 0
    [r] = _restarts(out)
    assert "exit_buffer changed" in str(r["data"]["error"]) and "not seen" in str(r["data"]["error"])
