"""A key that is not a bare key is named quoted, as TOML writes it, by `config check` and `run` alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.configcheck import check_file
from agent.configkeys import shown_key
from agent.errors import ConfigError
from tests.helpers import run_cli

SINK = '[[sinks]]\nuri = "stdout:"\n'


@pytest.mark.parametrize(("body", "key"), [
    ('"agent.key" = 2\n', '"agent.key"'),
    ('"sinks[0]" = 1\n', '"sinks[0]"'),
    ('[probes."cgroup.watch"]\n', 'probes."cgroup.watch"'),
    ('[probes." "]\n', 'probes." "'),
    ('[agent]\n"state_dir.x" = 1\n', 'agent."state_dir.x"'),
    ('[[listeners]]\nuri = "vsock:any:5000"\n"x[0]" = 1\n', 'listeners[0]."x[0]"'),
    ('[probes.cgroup.watch]\n"a b" = 1\n', 'probes.cgroup.watch."a b"'),
    ('[[sinks]]\nuri = "file:x.ndjson"\n"q\\"uote" = 1\n', 'sinks[1]."q\\"uote"'),
])
def test_a_key_that_needs_quoting_is_named_quoted_by_check_and_run(tmp_path: Path, body: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(SINK + body if body.startswith("[") else body + SINK)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == key and str(info.value).startswith(f"{path}: {key}: ")
    assert [p.key for p in check_file(path)] == [key]


def test_a_dotted_key_and_the_tables_it_reads_as_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('"agent.key" = 2\n[agent]\nkey = "k"\n"state_dir.x" = 1\nstate_dir = "s"\n' + SINK)
    # agent.key names no key file here: that is a problem of its own
    assert [p.key for p in check_file(path)] == ['"agent.key"', 'agent."state_dir.x"', "agent.key"]


def test_the_command_line_names_the_quoted_key_in_both_verbs(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[probes."cgroup.watch"]\n' + SINK)
    for args in (["config", "check", str(path)], ["run", "--once", "--config", str(path)]):
        res = run_cli(args, cwd=tmp_path)
        assert res.returncode == 2
        assert f'{path}: probes."cgroup.watch": unknown probe'.encode() in res.stderr, res.stderr


@pytest.mark.parametrize(("name", "shown"), [
    ("interval", "interval"), ("a-b_9", "a-b_9"), ("", '""'), ("a.b", '"a.b"'), ("é", '"é"'),
    ("a\tb", '"a\\tb"'), ("a\x7fb", '"a\\u007fb"'), ('"', '"\\""'), ("\\", '"\\\\"'),
])
def test_a_key_is_shown_as_toml_writes_it(name: str, shown: str) -> None:
    import tomllib

    assert shown_key(name) == shown
    assert list(tomllib.loads(f"{shown} = 1")) == [name]


@pytest.mark.parametrize("uri", ["", "bogus:x"])
@pytest.mark.parametrize(("odd", "key"), [('""', 'sinks[0].""'), ('"a.b"', 'sinks[0]."a.b"')])
def test_a_key_no_sink_has_is_named_beside_a_bad_uri(tmp_path: Path, uri: str, odd: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[sinks]]\nuri = "{uri}"\n{odd} = 1\n')
    assert [p.key for p in check_file(path)] == ["sinks[0].uri", key]
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "sinks[0].uri"  # `run` names the first


def test_a_key_no_sink_has_is_named_when_the_uri_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[sinks]]\n"" = 1\nbogus = 2\n')
    assert [p.key for p in check_file(path)] == ['sinks[0].""', "sinks[0].uri"]
