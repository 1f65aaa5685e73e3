"""`hoststamp probe NAME`: a round that read nothing (only error readings) is printed, and is a failure (exit 1);
a round that read something, with some of it failing, is not."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.helpers import run_cli


def _config(tmp: Path, body: str) -> Path:
    cfg = tmp / "hoststamp.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{tmp / "state"}"\n' + body)
    return cfg


def _leaf(root: Path, name: str, memory_events: str) -> None:
    leaf = root / name
    leaf.mkdir(parents=True)
    (leaf / "cgroup.controllers").write_text("memory pids\n")
    (leaf / "memory.events").write_text(memory_events)
    (leaf / "cpu.stat").write_text("usage_usec 10\nuser_usec 5\nsystem_usec 5\n")
    (leaf / "pids.events").write_text("max 0\n")


def test_a_probe_that_read_nothing_prints_its_error_reading_and_exits_1(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{tmp_path / "no-such-root"}"\n')
    res = run_cli(["probe", "cgroup", "--config", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    [line] = res.stdout.splitlines()
    event = orjson.loads(line)
    assert event["data"]["error"] and "no-such-root" in event["data"]["error"]
    last = res.stderr.decode().splitlines()[-1]
    assert last.startswith("hoststamp probe cgroup: nothing could be read: ") and "no-such-root" in last
    (tmp_path / "p.ndjson").write_bytes(res.stdout)
    assert run_cli(["verify", "p.ndjson"], cwd=tmp_path).returncode == 0  # the error reading is a signed event


def test_a_probe_with_one_bad_leaf_among_good_ones_exits_0(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory pids\n")
    _leaf(root, "good", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    _leaf(root, "bad", "low zero\n")
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n')
    res = run_cli(["probe", "cgroup", "--config", str(cfg)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = [orjson.loads(line)["data"] for line in res.stdout.splitlines()]
    assert any(d.get("error") for d in data) and any(not d.get("error") for d in data)


def test_a_probe_with_nothing_to_report_says_so_on_stderr_and_exits_0(tmp_path: Path) -> None:
    """No failure, nothing to read (no interface the link probe includes): stdout stays empty, stderr says why."""
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, '[probes.link]\ninclude = ["no-such-interface-*"]\n')
    res = run_cli(["probe", "link", "--config", str(cfg)], cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == b"", res.stderr
    assert res.stderr.decode().splitlines()[-1].startswith("hoststamp probe link: no readings")
