"""The status file and its rendering: what `hoststamp status` shows at a glance."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from agent.health import (
    AgentView,
    ListenerView,
    QueueCounts,
    dir_bytes,
    listener_view,
    read_status,
    render,
    sink_views,
    snapshot,
    write_status,
)
from agent.pipeline import PipelineStats, SinkQueue


def _doc(**over: object) -> dict[str, object]:
    stats = PipelineStats(signed=10)
    p = stats.probe("cgroup")
    p.runs, p.last_duration = 3, 0.002
    q = SinkQueue(100)
    views = sink_views([(("file:/a", 1), q, None, False, 0)], stats, {})
    view = AgentView(pipeline=stats, probes=("cgroup", "link"), sinks=views, listeners=(), host_id="h",
                     keyid="k", config=None, started_at=100.0)
    doc = snapshot(view, now=200.0, pid=42)
    doc.update(over)
    return doc


def test_a_healthy_agent() -> None:
    report = render(_doc(), now=201.0)
    assert report.healthy
    lines = report.text.splitlines()
    assert lines[0].startswith("hoststamp pid 42: up 101s, 10 events signed")
    row = next(line for line in lines if line.startswith("cgroup"))
    assert row.split()[:3] == ["cgroup", "ok", "3"]
    assert next(line for line in lines if line.startswith("link")).split()[1] == "starting"
    assert next(line for line in lines if line.startswith("file:/a")).split()[1:3] == ["up", "0/100"]


def test_the_native_parts_in_use_are_shown() -> None:
    from agent import _native

    doc = _doc()
    assert doc["native"] == {"signer": _native.Signer is not None, "restamp": _native.Restamper is not None}
    lines = render(_doc(native={"signer": True, "restamp": False}), now=201.0).text.splitlines()
    assert "native parts: signer" in lines
    lines = render(_doc(native={"signer": False, "restamp": False}), now=201.0).text.splitlines()
    assert "native parts: none (signing and stamping in Python)" in lines
    assert all(not line.startswith("native") for line in render({k: v for k, v in _doc().items() if k != "native"},
                                                                   now=201.0).text.splitlines())


def test_failing_probe_down_sink_stale_or_stopped_is_unhealthy() -> None:
    doc = _doc()
    doc["probes"]["cgroup"].update(last_success=False, last_error="timed out after 5 s")  # type: ignore[index]
    report = render(doc, now=201.0)
    assert not report.healthy and "FAILING" in report.text and "timed out after 5 s" in report.text
    doc = _doc()
    doc["sinks"][0].update(healthy=False, last_error="connection refused")  # type: ignore[index]
    report = render(doc, now=201.0)
    assert not report.healthy and "DOWN" in report.text and "connection refused" in report.text
    report = render(_doc(), now=260.0)
    assert not report.healthy and "STALE" in report.text
    report = render(_doc(running=False), now=201.0)
    assert not report.healthy and "STOPPED" in report.text
    # stopped: how long it ran (start to its last status), not the time since its start
    report = render(_doc(running=False, written_at=103.0), now=500.0)
    assert ": ran 3s," in report.text.splitlines()[0] and "STOPPED 6m" in report.text


def test_failed_reload_and_listeners_are_shown() -> None:
    doc = _doc(reloads={"ok": 0, "failed": 1, "last_ok": False, "last_error": "x.toml: sinks[0].uri: bad"},
               listeners=[{"uri": "unix:/in", "accepted": 5, "duplicates": 0, "dropped": 0, "connections": 2,
                           "connections_open": 1, "rejected": {"json": 3, "depth": 0}}])
    text = render(doc, now=201.0).text
    assert "reload FAILED (running the previous configuration)" in text and "sinks[0].uri: bad" in text
    # a reload whose configuration runs without a listener that could not listen says so
    doc["reloads"] = {"ok": 0, "failed": 1, "last_ok": False, "last_applied": True,
                      "last_error": "listener unix:/in: cannot listen"}
    assert "reload FAILED (running its configuration without what failed)" in render(doc, now=201.0).text
    assert next(line for line in text.splitlines() if line.startswith("unix:/in")).split()[-1] == "json=3"


def test_sink_views_merge_live_queues_and_retired_counts() -> None:
    stats = PipelineStats()
    old, new = SinkQueue(10), SinkQueue(20)
    for q, n in ((old, 3), (new, 2)):
        for i in range(n):
            q.put_nowait(_event(i))
    old.close()
    old.put_nowait(_event(9))  # routed to the sink, and counted as dropped: closed
    (v,) = sink_views([(("file:/a", 1), old, None, True, 2), (("file:/a", 1), new, 128, False, 3)], stats,
                      {("file:/a", 1): QueueCounts(enqueued=100, blocked=7, dropped=Counter({"evicted": 4}))})
    assert (v.depth, v.capacity, v.enqueued, v.spool_bytes, v.draining, v.blocked) == (5, 20, 106, 128, True, 7)
    assert v.dropped == {"closed": 1, "evicted": 4}
    assert v.in_hand == 5  # both generations' workers' batches


def test_listener_view_sums_receivers_and_keeps_the_retired_total() -> None:
    from agent.receiver.telemetry import ReceiverStats

    def live() -> ReceiverStats:
        return ReceiverStats(accepted=2, duplicates=1, connections=3, connections_open=1, rejected=Counter(json=2))

    retired = ListenerView("u", accepted=10, connections=5, rejected={"json": 1, "frame": 1})
    v = listener_view("u", [live(), live()], retired)
    assert (v.accepted, v.duplicates, v.connections, v.connections_open) == (14, 2, 11, 2)
    assert v.rejected == {"json": 5, "frame": 1}


def test_a_listener_that_takes_no_events_is_down_with_why() -> None:
    from agent.receiver.telemetry import ReceiverStats

    down = ReceiverStats(healthy=False, last_error="connect nats://u:pw@127.0.0.1:4222: refused")
    v = listener_view("nats://127.0.0.1:4222/in.>", [down])
    assert not v.healthy and v.last_error == "connect nats://u:***@127.0.0.1:4222: refused"
    failed = listener_view("unix:/in", [], failed="address in use")
    assert not failed.healthy and failed.last_error == "address in use"
    assert listener_view("unix:/in", [ReceiverStats()]).healthy
    doc = _doc(listeners=[{"uri": v.uri, "accepted": 0, "duplicates": 0, "dropped": 0, "connections": 0,
                           "connections_open": 0, "rejected": {}, "healthy": False, "last_error": v.last_error}])
    report = render(doc, now=201.0)
    row = next(line for line in report.text.splitlines() if line.startswith("nats://"))
    assert "DOWN" in row and "refused" in row and not report.healthy


def _event(i: int):  # type: ignore[no-untyped-def]
    from agent.model import Event

    return Event(f"id{i}", "src", "t", i, b"{}")


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(int(read_status(path)["signed"]))
            except FileNotFoundError:
                pass

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            write_status(path, _doc(signed=i))
    finally:
        stop.set()
        t.join(10)
    assert seen and seen == sorted(seen)  # never a torn or partial document, never out of order
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    path.write_bytes(orjson.dumps({"version": 99}))
    with pytest.raises(ValueError):
        read_status(path)


def test_dir_bytes_counts_files_below(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)
    os.symlink(tmp_path / "a", tmp_path / "link")
    assert dir_bytes(tmp_path) == 15
    assert dir_bytes(tmp_path / "absent") == 0


@pytest.mark.anyio
async def test_spool_bytes_come_from_the_sinks_spool(tmp_path: Path) -> None:
    from agent import config
    from agent.generation import Counts, Generation
    from agent.pipeline.spoolqueue import queue_for

    cfg = config.parse({"sinks": [{"uri": "file:x", "spool": str(tmp_path / "spool"), "spool_max_bytes": 1 << 20},
                                  {"uri": "file:y"}]}, env={})
    gen = Generation(1, cfg, queues=[queue_for(cfg.sinks[0].common), queue_for(cfg.sinks[1].common)])
    for i in range(5):
        await gen.queues[0].put(_event(i))
    for _ in range(10):  # the spool writes once per event-loop turn
        await asyncio.sleep(0)
    spooled, plain = Counts().sinks([gen], PipelineStats())
    assert spooled.spool_bytes is not None and spooled.spool_bytes > 0 and spooled.depth == 5
    assert plain.spool_bytes is None
    assert (spooled.spool_capacity, plain.spool_capacity) == (1 << 20, None)  # the backlog's bound, in bytes
    gen.queues[0].close()
    getattr(gen.queues[0], "spool").release()  # noqa: B009 - only a SpoolQueue has one


def test_sinks_that_differ_only_in_their_passwords_keep_labels_of_their_own() -> None:
    stats = PipelineStats()
    views = sink_views([(("nats://u:one@h:4222/s", 1), SinkQueue(10), None, False, 0),
                        (("nats://u:two@h:4222/s", 1), SinkQueue(10), None, False, 0)], stats, {})
    assert [v.uri for v in views] == ["nats://u:***@h:4222/s", "nats://u:***@h:4222/s #2"]


def test_a_generation_both_retiring_and_current_is_counted_once(tmp_path: Path) -> None:
    """A reload's first steps: the old generation is retiring before the new one is current; a scrape then
    must not count its queues twice (a counter that then went back)."""
    from agent.app import Agent
    from agent.config import parse
    from agent.model import Event
    from agent.signing.keys import SigningKey

    cfg = parse({"agent": {"state_dir": str(tmp_path / "state")}, "probes": {
        p: {"enabled": False} for p in ("cgroup", "lve", "mounts", "taskstats", "link")},
        "sinks": [{"uri": f"file:{tmp_path / 'out.ndjson'}"}]}, env={})
    agent = Agent(cfg, SigningKey.generate())
    for i in range(3):
        agent.gen.queues[0].put_nowait(Event(f"id{i}", "s", "t", i, b"{}"))
    before = agent.view().sinks[0].enqueued
    agent._retiring.append(agent.gen)  # what a reload does first
    assert agent.view().sinks[0].enqueued == before == 3


def test_two_sinks_with_the_same_uri_keep_counters_and_labels_of_their_own(tmp_path: Path) -> None:
    """The second ``[[sinks]]`` with a URI the first has counts apart, shown as ``URI #2``; the first keeps
    its URI as its label."""
    from agent.app import Agent
    from agent.config import parse
    from agent.model import Event
    from agent.signing.keys import SigningKey

    uri = f"file:{tmp_path / 'out.ndjson'}"
    cfg = parse({"agent": {"state_dir": str(tmp_path / "state")}, "probes": {
        p: {"enabled": False} for p in ("cgroup", "lve", "mounts", "taskstats", "link")},
        "sinks": [{"uri": uri}, {"uri": uri, "queue_size": 50}]}, env={})
    agent = Agent(cfg, SigningKey.generate())
    first, second = agent.workers
    assert first.stats is not second.stats
    for i in range(3):
        agent.gen.queues[1].put_nowait(Event(f"id{i}", "s", "t", i, b"{}"))
    second.stats.send_errors = 2
    one, two = agent.view().sinks
    assert (one.uri, one.enqueued, one.depth, one.stats.send_errors) == (uri, 0, 0, 0)
    assert (two.uri, two.enqueued, two.depth, two.stats.send_errors) == (f"{uri} #2", 3, 3, 2)
    assert two.capacity == 50


def test_a_label_numbered_apart_never_takes_another_sinks_uri() -> None:
    stats = PipelineStats()
    views = sink_views([(("file:a", 1), SinkQueue(10), None, False, 0),
                        (("file:a #2", 1), SinkQueue(10), None, False, 0),  # a file named "a #2"
                        (("file:a", 2), SinkQueue(10), None, False, 0)], stats, {})
    assert [v.uri for v in views] == ["file:a", "file:a #2", "file:a #3"]
    assert len({id(v.stats) for v in views}) == 3


def test_sinks_that_show_alike_keep_each_labels_counters_across_a_reordering_reload() -> None:
    """Counters go by what the label shows: a reload that puts another sink showing the same masked URI first
    continues that label's counters, never starting them again from 0."""
    from agent.pipeline.stats import sink_keys

    one, two = "nats://u:one@h:4222/s", "nats://u:two@h:4222/s"
    stats = PipelineStats()
    (before,) = sink_keys([one])
    stats.sink(*before).sent = 6
    retired = {before: QueueCounts(enqueued=6)}  # its queue, retired by the reload
    keys = sink_keys([two, one])
    assert keys == [("nats://u:***@h:4222/s", 1), ("nats://u:***@h:4222/s", 2)] and keys[0] == before
    views = sink_views([(k, SinkQueue(10), None, False, 0) for k in keys], stats, retired)
    assert [(v.uri, v.stats.sent, v.enqueued) for v in views] == [
        ("nats://u:***@h:4222/s", 6, 6), ("nats://u:***@h:4222/s #2", 0, 0)]
