"""A reload that removes a sink which cannot take the events in flight (a full disk): the sinks of the new
configuration have them, so their senders are answered, not told to send them again: a sink present in both
configurations sees every event once (docs/operating.md, reloads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from tests.helpers import ROOT, run_cli
from tests.ops.agentproc import AgentProcess, config_text, wait_for


def _config(tmp: Path, sinks: list[str]) -> str:
    return (config_text(sinks)
            .replace("drain_timeout = 5.0", "drain_timeout = 1.0")
            + f'[[listeners]]\nuri = "unix:{tmp / "in.sock"}"\n')


def test_events_a_removed_sink_never_took_reach_the_kept_sink_once_and_are_acked(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    ok = tmp_path / "ok.ndjson"
    cfg = tmp_path / "a.toml"
    cfg.write_text(_config(tmp_path, ["file:/dev/full", f"file:{ok}"]).replace("[probes.cgroup]\n",
                                                                               "[probes.cgroup]\nenabled = false\n"))
    events = b"".join(orjson.dumps({"specversion": "1.0", "id": f"g-{i}", "source": "guest://t", "type": "t"})
                      + b"\n" for i in range(4))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        sender = subprocess.Popen([sys.executable, "-m", "agent", "send", "--to", f"unix:{tmp_path / 'in.sock'}",
                                   "--timeout", "30"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=(tmp_path / "send.err").open("wb"))
        try:
            assert sender.stdin is not None
            sender.stdin.write(events)
            sender.stdin.close()
            wait_for(lambda: ok.exists() and len(ok.read_bytes().splitlines()) == 4, what="the kept sink's events")
            cfg.write_text(_config(tmp_path, [f"file:{ok}"]).replace("[probes.cgroup]\n",
                                                                     "[probes.cgroup]\nenabled = false\n"))
            agent.signal(signal.SIGHUP)
            assert sender.wait(timeout=30) == 0, (tmp_path / "send.err").read_text()
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        assert agent.stop() == 0
    ids = [orjson.loads(line)["id"] for line in ok.read_bytes().splitlines()]
    assert sorted(ids) == [f"g-{i}" for i in range(4)]
