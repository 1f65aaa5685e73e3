"""A spooled sink whose downstream never confirms, reloaded again and again: what its old reader counted as sent
and never had confirmed is read again from the spool by the next one, and not counted as sent a second time, so
its counters add up at every step (enqueued = sent + dropped + depth + in hand), and ``sent`` never exceeds
what was ever enqueued."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, wait_for


def _adds_up(s: dict[str, Any]) -> bool:
    return bool(s["enqueued"] == s["sent"] + sum(s["dropped"].values()) + s["depth"] + s["in_hand"])


def test_reloads_of_a_spooled_sink_count_each_event_sent_once(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    # a unix socket that accepts but never acknowledges: the sink takes events and never has them confirmed
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen(16)
    held = []
    cfg = tmp_path / "a.toml"
    cfg.write_text(config_text([f"unix:{tmp_path / 'mute.sock'}"],
                               sink_keys=f'spool = "{tmp_path / "spool"}"\nbackoff_max = 0.2\n')
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
                assert _adds_up(s) and s["sent"] <= s["enqueued"], s
            assert agent.stop() == 0
    finally:
        for c in held:
            c.close()
        mute.close()
