"""`config check` lists a NUL character in a path, name or URI along with every other problem of the file, however
many there are, each once."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.configcheck import check_file
from agent.errors import ConfigError
from tests.helpers import run_cli

NUL = "must not hold a NUL character"

MANY = """\
[agent]
state_dir = "/tmp/a\\u0000b"
drain_timeout = -1

[probes.cgroup]
intervall = 3
root = "/sys\\u0000"

[[sinks]]
uri = "file:/tmp/a\\u0000b"

[[sinks]]
uri = "bogus:x"

[[listeners]]
uri = "unix:/tmp/x\\u0000y"
name = "a\\u0000"
"""


def test_every_nul_is_listed_with_the_other_problems(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text(MANY)
    problems = check_file(path)
    by_key = {p.key: p.reason for p in problems}
    assert len(by_key) == len(problems)  # each key once
    nul = {"agent.state_dir", "probes.cgroup.root", "sinks[0].uri", "listeners[0].uri", "listeners[0].name"}
    assert set(by_key) == nul | {"agent.drain_timeout", "probes.cgroup.intervall", "sinks[1].uri"}
    assert all(by_key[k] == NUL for k in nul)
    assert "unknown key" in by_key["probes.cgroup.intervall"] and "bogus" in by_key["sinks[1].uri"]
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    assert res.returncode == 2
    assert f"{path}: 8 problems" in res.stderr.decode()


@pytest.mark.parametrize("body", [
    '[[sinks]]\nuri = "file:/tmp/a\\u0000b"\n',
    '[agent]\nstate_dir = "/tmp/a\\u0000b"\n[[sinks]]\nuri = "stdout:"\n',
    '"colour\\u0000" = 1\n[[sinks]]\nuri = "stdout:"\n',
    '[probes."cg\\u0000"]\ninterval = 1\n[[sinks]]\nuri = "stdout:"\n',
])
def test_a_nul_alone_is_a_problem_of_the_check_as_of_run(tmp_path: Path, body: str) -> None:
    """What `run` refuses, the check lists as a problem (it loaded such a file as valid, or failed on it)."""
    path = tmp_path / "nul.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    problems = check_file(path)
    assert [(p.key, p.reason) for p in problems] == [(exc.value.key, NUL)]
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.decode().splitlines() == [str(problems[0]), f"{path}: 1 problem"]
