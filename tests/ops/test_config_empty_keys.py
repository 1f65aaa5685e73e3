"""An empty key (TOML allows ``"" = 1``) is one problem among the others of its table, named as ``""``."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.configcheck import check_file
from agent.errors import ConfigError
from tests.helpers import run_cli

EMPTY_KEYS = """\
"" = 0

[agent]
"" = 1
bogus = 2
drain_timeout = "soon"

[probes.cgroup]
"" = 1
interval = -1

[probes.cgroup.watch]
"" = 1
coalesce = -1

[[sinks]]
uri = "file:out.ndjson"
"" = 1
queue_size = "big"
batch_max = 0

[[listeners]]
"" = 1
uri = "vsock:seven:5000"

[metrics]
"" = 1
listen = "localhost"
"""

EXPECTED = {
    '""', 'agent.""', "agent.bogus", "agent.drain_timeout", 'probes.cgroup.""', "probes.cgroup.interval",
    'probes.cgroup.watch.""', "probes.cgroup.watch.coalesce", 'sinks[0].""', "sinks[0].queue_size",
    "sinks[0].batch_max", 'listeners[0].""', "listeners[0].uri", 'metrics.""', "metrics.listen",
}


def test_an_empty_key_does_not_hide_the_other_problems_of_its_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(EMPTY_KEYS)
    problems = check_file(path)
    assert {p.key for p in problems} == EXPECTED
    assert all(p.severity == "error" for p in problems)
    assert all("unknown key" in p.reason for p in problems if p.key and p.key.endswith('""'))
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    lines = res.stderr.decode().splitlines()
    assert res.returncode == 2 and lines[-1] == f"{path}: {len(EXPECTED)} problems"
    assert f'{path}: agent."": unknown key (allowed here: ' in res.stderr.decode()


@pytest.mark.parametrize(("body", "key"), [
    ('[agent]\n"" = 1\n', 'agent.""'),
    ('"" = 1\n', '""'),
    ('[[sinks]]\nuri = "stdout:"\n[[sinks]]\nuri = "stdout:"\n"" = 1\n', 'sinks[1].""'),
    ('[probes.""]\ninterval = 5\n', 'probes.""'),
    ('[probes.lve.""]\n', 'probes.lve.""'),
])
def test_run_names_an_empty_key_as_the_check_does(tmp_path: Path, body: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == key and str(info.value).startswith(f"{path}: {key}: ")
    assert key in {p.key for p in check_file(path)}


def test_a_key_holding_a_dot_does_not_hide_the_other_problems_either(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[agent]\n"a.b" = 1\nbogus = 2\n"[x]" = 3\n[[sinks]]\nuri = "stdout:"\n')
    assert [p.key for p in check_file(path)] == ['agent."a.b"', "agent.bogus", 'agent."[x]"']
