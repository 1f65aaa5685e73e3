"""The real CLI: ``hoststamp run --listen unix:...`` takes what ``hoststamp send --to unix:...`` ships."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from agent.signing.keys import generate_keypair
from tests.helpers import ROOT, run_cli


def lines(*ids: str) -> bytes:
    return b"".join(orjson.dumps({"specversion": "1.0", "id": i, "source": "guest://vm/app", "type": "t.v1",
                                  "data": {"id": i}, "hostid": "forged"}) + b"\n" for i in ids)


def test_send_to_a_running_agent(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    sock, out = tmp_path / "rx.sock", tmp_path / "out.ndjson"
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--probes", "none", "--key", "keys/host.key",
         "--listen", f"unix:{sock}", "--sink", f"file:{out}"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert agent.poll() is None, agent.communicate()[1].decode()
            assert time.monotonic() < deadline, "listener never appeared"
            time.sleep(0.02)
        good = run_cli(["send", "--to", f"unix:{sock}", "--timeout", "20"], cwd=tmp_path, stdin=lines("a", "b"))
        assert good.returncode == 0, good.stderr.decode()
        assert b"2 of 2 events acknowledged" in good.stderr
        bad = run_cli(["send", "--to", f"unix:{sock}", "--timeout", "20"], cwd=tmp_path,
                      stdin=lines("c") + b"not json\n" + b'{"id":"x"}\n')
        assert bad.returncode == 1
        err = bad.stderr.decode()
        assert "line 2: not JSON" in err and "line 3: attributes:" in err
        # a second agent on the same socket fails, and says so without first saying it runs
        second = run_cli(["run", "--probes", "none", "--key", "keys/host.key", "--listen", f"unix:{sock}",
                          "--sink", f"file:{tmp_path / 'other.ndjson'}"], cwd=tmp_path)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent_err = agent.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            agent.kill()
            agent_err = agent.communicate()[1]
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [e["id"] for e in events] == ["a", "b", "c"]
    assert second.returncode == 1 and b"another process is listening there" in second.stderr
    assert b"hoststamp: running;" not in second.stderr  # it never said it was running
    assert agent.returncode == 0 and b"hoststamp: running;" in agent_err
    assert all(e["hostid"] != "forged" and e["hostpeer"].startswith(f"unix:uid={os.getuid()},pid=") for e in events)
    assert not sock.exists()


def test_send_to_nowhere_fails_within_its_timeout(tmp_path: Path) -> None:
    r = run_cli(["send", "--to", f"unix:{tmp_path}/none.sock", "--timeout", "0.3"], cwd=tmp_path, stdin=lines("a"))
    assert r.returncode == 1
    assert b"0 of 1 events acknowledged" in r.stderr


def test_send_to_a_bad_uri_is_a_usage_error(tmp_path: Path) -> None:
    r = run_cli(["send", "--to", "vsock:any:5"], cwd=tmp_path, stdin=lines("a"))
    assert r.returncode == 2
    assert b"vsock:any" in r.stderr


def test_send_without_a_timeout_waits_for_a_host_that_comes_late(tmp_path: Path) -> None:
    """However long the host is away (the README's promise): no bound unless ``--timeout`` gives one; sent once
    the listener is there."""
    from agent.cli import _build_parser

    assert _build_parser().parse_args(["send", "--to", "unix:/x.sock"]).timeout is None
    generate_keypair(tmp_path / "keys")
    sock, out = tmp_path / "rx.sock", tmp_path / "out.ndjson"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (tmp_path / "in.ndjson").write_bytes(lines("late-1", "late-2"))
    with open(tmp_path / "in.ndjson", "rb") as stdin:
        sender = subprocess.Popen([sys.executable, "-m", "agent", "send", "--to", f"unix:{sock}"], cwd=tmp_path,
                                  env=env, stdin=stdin, stderr=subprocess.PIPE)
    agent = None
    try:
        time.sleep(1.5)  # the sender is retrying meanwhile
        assert sender.poll() is None
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--probes", "none", "--key", "keys/host.key",
             "--listen", f"unix:{sock}", "--sink", f"file:{out}"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
        err = sender.communicate(timeout=60)[1]
        assert sender.returncode == 0, err.decode()
        assert b"2 of 2 events acknowledged" in err
    finally:
        sender.kill()
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.communicate(timeout=30)
    assert [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()] == ["late-1", "late-2"]
