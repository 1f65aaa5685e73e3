"""A sink whose downstream never confirms, reloaded again and again: what its old sink took (counted as sent) and
never had confirmed is sent again by the reloaded one (read again from its spool, or handed on), and counts again
in both enqueued and sent, so that its counters add up at every step (enqueued = sent + dropped + depth + in hand)
and ``sent`` never exceeds what was enqueued."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, counters_add_up, wait_for


@pytest.mark.parametrize("spool", [True, False], ids=["spooled", "in-memory"])
def test_reloads_of_a_sink_whose_downstream_never_confirms_keep_its_counters_adding_up(tmp_path: Path,
                                                                                       spool: bool) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    # a unix socket that accepts but never acknowledges: the sink takes events and never has them confirmed
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen(16)
    held = []
    cfg = tmp_path / "a.toml"
    keys = (f'spool = "{tmp_path / "spool"}"\n' if spool else "") + "backoff_max = 0.2\n"
    cfg.write_text(config_text([f"unix:{tmp_path / 'mute.sock'}"], sink_keys=keys)
                   .replace("drain_timeout = 5.0", "drain_timeout = 1.0"))
    try:
        with AgentProcess(tmp_path, cfg) as agent:
            agent.wait_ready()
            for n in range(1, 4):
                mute.settimeout(10)
                held.append(mute.accept()[0])
                wait_for(lambda: (agent.status()["sinks"][0]["sent"] or 0) > 5, what="events taken by the sink")
                agent.signal(signal.SIGHUP)
                wait_for(lambda n=n: agent.status()["generation"] == n + 1, what=f"reload {n}")
                wait_for(lambda: len(agent.status()["sinks"]) == 1, what="the old generation retired")
                s = agent.status()["sinks"][0]
                assert counters_add_up(s) and s["sent"] <= s["enqueued"], s
            assert agent.stop() == 0
            s = agent.status()["sinks"][0]
            assert counters_add_up(s) and s["sent"] <= s["enqueued"], s
    finally:
        for c in held:
            c.close()
        mute.close()
