"""A reload hands a sink's undelivered events to the sink of the new configuration with the same label *and* the
same URI: a label can pass to another URI (``URI #2``, the second of two ``URI`` sinks, then a sink whose URI
itself ends so), its events cannot."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, wait_for


def _config(sinks: list[str]) -> str:
    return (config_text(sinks, sink_keys="backoff_max = 0.2\n")
            .replace("drain_timeout = 5.0", "drain_timeout = 1.0"))


def test_events_of_the_second_of_two_same_uri_sinks_do_not_go_to_a_uri_named_like_its_label(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    down = f"unix:{tmp_path / 'nobody.sock'}"  # nobody listens: both sinks hold what they were given
    cfg = tmp_path / "a.toml"
    cfg.write_text(_config([down, down]))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: all((s["enqueued"] or 0) > 5 for s in agent.status()["sinks"]),
                 what="events for both down sinks")
        seen = len(agent.log())
        cfg.write_text(_config([down, f"{down} #2"]))  # a socket whose file name ends in " #2": another sink
        agent.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded: " in agent.log()[seen:], what="the reload")
        log = agent.log()[seen:]
        # the first sink's events go on to the first sink of the new configuration; the second's have no
        # successor, and are said to be lost, not sent to the socket named "nobody.sock #2"
        assert log.count("handed to the reloaded sink") == 1, log
        assert "may be lost" in log or "are dropped" in log, log
        assert agent.stop() == 0
