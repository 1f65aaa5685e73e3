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


def test_a_label_keeps_its_series_when_sinks_that_show_alike_are_reordered(workdir: Path) -> None:
    """Two file sinks whose URIs differ only in what shows as a password (``x:a:PASSWORD@`` in the path) share a
    masked label, numbered ``#2`` for the second: a reload that puts a new one of them first continues the
    first label's counters with it, so no label's series goes back (what a scraper would take for a reset)."""
    a, b = "file:out/x:a:one@s.ndjson", "file:out/x:a:two@s.ndjson"
    label = "file:out/x:a:***@s.ndjson"
    out_a, out_b = workdir / "out" / "x:a:one@s.ndjson", workdir / "out" / "x:a:two@s.ndjson"
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text([a]))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(sequences(out_a)) >= 16, what="events in the first file")
        before = metric(agent.scrape(), "hoststamp_sink_events_sent_total", sink=label)
        assert before is not None and before > 0
        cfg.write_text(config_text([b, a]))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["generation"] == 2, what="the reload")
        after = agent.scrape()
        for name in ("hoststamp_sink_events_sent_total", "hoststamp_sink_events_enqueued_total"):
            now = metric(after, name, sink=label)
            assert now is not None and now >= before, (name, now, before)
        wait_for(lambda: len(sequences(out_b)) >= 8, what="events in the second file")
        assert agent.stop() == 0
        final = {s["uri"]: s for s in agent.status()["sinks"]}
    assert set(final) == {label, f"{label} #2"}
    # the label's series is the first file's sink's until the reload, then the second's; "#2" is the first
    # file's sink since the reload: every event of the second configuration went to both
    lines_a, lines_b = len(sequences(out_a)), len(sequences(out_b))
    assert final[f"{label} #2"]["sent"] == final[f"{label} #2"]["enqueued"] == lines_b, (final, lines_b)
    assert final[label]["sent"] == final[label]["enqueued"] == lines_a, (final, lines_a)
