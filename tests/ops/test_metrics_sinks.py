"""Two ``[[sinks]]`` with the same URI, in a real agent: counters of their own, labels of their own."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, metric, sequences, wait_for


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    return tmp_path


def test_two_sinks_with_the_same_uri_count_apart_across_a_reload(workdir: Path) -> None:
    """Both write every event to the same file; each counts its own (the first is labelled with its URI, the
    second ``URI #2``), and a reload keeps each one's counts going."""
    uri = "file:out/a.ndjson"
    out = workdir / "out" / "a.ndjson"
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text([uri, uri]))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(sequences(out)) >= 8, what="events in the file")
        text = agent.scrape()
        first = metric(text, "hoststamp_sink_events_enqueued_total", sink=uri)
        second = metric(text, "hoststamp_sink_events_enqueued_total", sink=f"{uri} #2")
        assert first is not None and second is not None and first > 0 and second > 0
        assert metric(text, "hoststamp_sink_up", sink=f"{uri} #3") is None  # two sinks, two labels
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["generation"] == 2, what="the reload")
        seen = len(sequences(out))
        wait_for(lambda: len(sequences(out)) >= seen + 8, what="events after the reload")
        assert agent.stop() == 0
        final = agent.status()["sinks"]
    assert [s["uri"] for s in final] == [uri, f"{uri} #2"]
    one, two = final
    # every event went to both, and each counted its own once, across both generations
    lines = len(sequences(out))
    assert one["sent"] == one["enqueued"] == two["sent"] == two["enqueued"] == lines // 2, (final, lines)
    assert one["enqueued"] >= first and two["enqueued"] >= second
