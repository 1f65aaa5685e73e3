"""``hoststamp_config_generation`` says which configuration is in effect: it rises once a reload took effect."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, metric, wait_for


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    return tmp_path


def test_the_generation_rises_once_the_new_sinks_run_not_when_the_reload_starts(workdir: Path) -> None:
    """The old sink (a socket nobody listens on) holds events, so the reload waits for its drain, until
    ``drain_timeout``: meanwhile both sinks show in /metrics, and the generation is still the old one."""
    down = f"unix:{workdir / 'nobody.sock'}"
    new = f"file:{workdir / 'new.ndjson'}"
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text([down], sink_keys="backoff_max = 0.2\n").replace("drain_timeout = 5.0",
                                                                                "drain_timeout = 6.0"))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: (agent.status()["sinks"][0]["enqueued"] or 0) > 5, what="events for the down sink")
        cfg.write_text(config_text([new]).replace("drain_timeout = 5.0", "drain_timeout = 6.0"))
        agent.signal(signal.SIGHUP)

        def both_sinks() -> str | None:  # the new generation built, the old one still draining
            text = agent.scrape()
            shown = [metric(text, "hoststamp_sink_up", sink=s) is not None for s in (down, new)]
            return text if all(shown) else None

        during = wait_for(both_sinks, what="a scrape while the reload waits for the old sink")
        assert metric(during, "hoststamp_config_generation") == 1.0
        assert metric(during, "hoststamp_config_reloads_total", result="success") == 0.0

        def done() -> str | None:
            text = agent.scrape()
            return text if metric(text, "hoststamp_config_reloads_total", result="success") == 1.0 else None

        after = wait_for(done, what="the reload done")
        assert metric(after, "hoststamp_config_generation") == 2.0
        assert metric(after, "hoststamp_sink_up", sink=down) is None
        assert agent.status()["generation"] == 2
        assert agent.stop() == 0
