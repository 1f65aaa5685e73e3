"""A spool left with events by the run before: the new run routes them to its sink, and counts them as enqueued,
so that its counters add up from the start (enqueued = sent + dropped + depth + in hand)."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, counters_add_up, wait_for


def _spool_left_by_a_run(tmp_path: Path, depth: int) -> Path:
    """Run an agent whose one sink is down until more than ``depth`` events are spooled, stop it; the config for
    the next run (its probe turned off, so that only the spooled events reach the sink)."""
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    cfg = tmp_path / "a.toml"
    cfg.write_text(config_text([f"unix:{tmp_path / 'nobody.sock'}"],
                               sink_keys=f'spool = "{tmp_path / "spool"}"\nbackoff_max = 0.2\n'))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: agent.status()["sinks"][0]["depth"] > depth, what="events spooled for the down sink")
        agent.signal(signal.SIGTERM)
        assert agent.proc.wait(30) == 0
    cfg.write_text(cfg.read_text().replace("[probes.cgroup]\n", "[probes.cgroup]\nenabled = false\n"))
    return cfg


def test_events_left_in_a_spool_are_counted_as_enqueued_by_the_next_run(tmp_path: Path) -> None:
    cfg = _spool_left_by_a_run(tmp_path, 5)
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        s = wait_for(lambda: (s := agent.status()["sinks"][0])["sent"] + s["depth"] > 5 and s, what="the status")
        assert s["enqueued"] > 5 and counters_add_up(s), s  # the spooled events: taken by the sink, or still waiting
        assert agent.stop() == 0


def test_records_a_start_up_salvage_found_lost_are_counted_as_enqueued_and_dropped(tmp_path: Path) -> None:
    """A spool damaged between two runs: what the salvage lost is counted as dropped (``spool_damaged``), and as
    enqueued, as the records it kept are, so the counters still add up."""
    cfg = _spool_left_by_a_run(tmp_path, 20)
    segment = max((tmp_path / "spool").glob("*.wal"), key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle of a record
    segment.write_bytes(bytes(data))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        s = wait_for(lambda: (s := agent.status()["sinks"][0])["dropped"].get("spool_damaged") and s,
                     what="the salvage's loss counted")
        assert counters_add_up(s), s
        assert agent.stop() == 0
