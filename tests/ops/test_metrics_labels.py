"""Sink labels in /metrics and the status: one label per sink whatever the URIs, and one label, one series, across
reloads (a URI that itself ends as a numbered label does, ``URI #2``, included)."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path

import pytest

from agent.health import QueueCounts, sink_views
from agent.pipeline import PipelineStats, SinkQueue
from agent.pipeline.stats import label_key, sink_keys, sink_label
from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, metric, wait_for

A = "file:out/a.ndjson"


def _labels(uris: list[str]) -> list[str]:
    return [sink_label(k) for k in sink_keys(uris)]


def test_every_sink_has_a_label_of_its_own_in_any_order() -> None:
    uris = [A, A, f"{A} #2", f"{A} #3", f"{A} #2 #2", f"{A} #2", "nats://u:one@h:4222/s", "nats://u:two@h:4222/s"]
    for order in itertools.permutations(uris, 5):
        labels = _labels(list(order))
        assert len(set(labels)) == len(labels), (order, labels)
        assert len(set(sink_keys(list(order)))) == len(labels)
    assert _labels([A, A]) == [A, f"{A} #2"]  # the ordinary case, as ever
    assert _labels([A, f"{A} #2", A]) == [A, f"{A} #2", f"{A} #3"]
    assert _labels(["nats://u:one@h:4222/s", "nats://u:two@h:4222/s"]) == [
        "nats://u:***@h:4222/s", "nats://u:***@h:4222/s #2"]


@pytest.mark.parametrize("label", [A, f"{A} #2", f"{A} #10", f"{A} #1", f"{A} #02", f"{A} #2 #2", "x #", "#2"])
def test_a_label_has_one_key(label: str) -> None:
    assert sink_label(label_key(label)) == label


def test_a_label_keeps_its_counters_when_a_reload_gives_it_to_a_uri_ending_in_a_number() -> None:
    """``URI #2``, the second of two sinks with the same URI, then (after a reload) a sink whose URI is ``URI #2``:
    one label, one series, which does not go back; while the reload drains, no third label shows."""
    stats = PipelineStats()
    before = sink_keys([A, A])
    stats.sink(*before[1]).sent = 40
    old_queues = [SinkQueue(10), SinkQueue(10)]
    after = sink_keys([A, f"{A} #2"])
    draining = sink_views([(k, q, None, True, 0) for k, q in zip(before, old_queues, strict=True)]
                          + [(k, SinkQueue(10), None, False, 0) for k in after], stats, {})
    assert [v.uri for v in draining] == [A, f"{A} #2"]
    retired: dict[tuple[str, int], QueueCounts] = {before[1]: QueueCounts(enqueued=40)}
    views = {v.uri: v for v in sink_views([(k, SinkQueue(10), None, False, 0) for k in after], stats, retired)}
    assert set(views) == {A, f"{A} #2"}
    assert views[f"{A} #2"].stats.sent == 40 and views[f"{A} #2"].enqueued == 40


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    return tmp_path


def test_a_reload_to_a_uri_that_ends_in_a_number_keeps_that_labels_series(workdir: Path) -> None:
    """A real agent: two sinks with the same URI, then a reload that replaces the second with a sink whose URI is
    the first's followed by `` #2`` (a file of that name): ``URI #2`` keeps counting from where it was."""
    label = f"{A} #2"
    out, other = workdir / "out" / "a.ndjson", workdir / "out" / "a.ndjson #2"
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text([A, A]))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(out.read_bytes().splitlines()) >= 80, what="events in the file")
        before = metric(agent.scrape(), "hoststamp_sink_events_sent_total", sink=label)
        assert before is not None and before >= 40
        cfg.write_text(config_text([A, label]))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["generation"] == 2, what="the reload")
        text = agent.scrape()
        for name in ("hoststamp_sink_events_sent_total", "hoststamp_sink_events_enqueued_total"):
            now = metric(text, name, sink=label)
            assert now is not None and now >= before, (name, now, before)
        assert metric(text, "hoststamp_sink_up", sink=f"{label} #2") is None
        wait_for(lambda: other.exists() and len(other.read_bytes().splitlines()) >= 8, what="events in 'a #2'")
        assert agent.stop() == 0
        final = agent.status()["sinks"]
    assert [s["uri"] for s in final] == [A, label]
