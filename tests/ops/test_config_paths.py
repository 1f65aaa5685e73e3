"""`config check` finds what `run` refuses at a spool or state directory (something that is no directory), and
`run` refuses it with the same message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.configcheck import check_file
from agent.signing.keys import generate_keypair
from tests.helpers import run_cli


def _config(tmp_path: Path, *, state_dir: str = "state", spool: str = "spool") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[agent]\nstate_dir = "{state_dir}"\n[[sinks]]\nuri = "file:{tmp_path}/ev.ndjson"\n'
                    f'spool = "{spool}"\n')
    return path


@pytest.mark.parametrize(("where", "key"), [("state_dir", "agent.state_dir"), ("spool", "sinks[0].spool")])
@pytest.mark.parametrize("below", [False, True])
def test_a_regular_file_where_a_directory_goes_fails_the_check_as_it_fails_run(tmp_path: Path, where: str,
                                                                               key: str, below: bool) -> None:
    (tmp_path / "taken").write_text("not a directory\n")
    path = _config(tmp_path, **{where: str(tmp_path / ("taken/sub" if below else "taken"))})
    problems = check_file(path)
    assert [(p.key, p.severity) for p in problems] == [(key, "error")]
    assert "not a directory (a regular file is in the way" in problems[0].reason
    generate_keypair(tmp_path / "keys")
    res = run_cli(["run", "--once", "--probes", "none", "--config", str(path)], cwd=tmp_path)
    assert res.returncode == 2 and f"{path}: {key}: ".encode() in res.stderr, res.stderr
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    assert res.returncode == 2 and f"{path}: {key}: ".encode() in res.stderr, res.stderr


def test_a_fifo_or_a_dangling_link_is_named_and_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    path = _config(tmp_path, state_dir=str(tmp_path / "fifo"), spool=str(tmp_path / "link"))
    # a subprocess with a bound: opening the FIFO would wait for a writer for good
    res = run_cli(["config", "check", str(path)], cwd=tmp_path, timeout=30)
    assert res.returncode == 2
    err = res.stderr.decode()
    assert f"{path}: agent.state_dir: cannot use the state directory {tmp_path}/fifo: not a directory (a FIFO" in err
    assert f"{path}: sinks[0].spool: spool {tmp_path}/link: not a directory (a symbolic link to nothing" in err


def test_a_directory_or_nothing_yet_passes_and_nothing_is_made(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    path = _config(tmp_path, state_dir=str(tmp_path / "state"), spool=str(tmp_path / "not-yet" / "spool"))
    assert check_file(path) == []
    assert not (tmp_path / "not-yet").exists()


def _in_the_way(tmp_path: Path, kind: str) -> Path:
    """Something that is no directory, at ``tmp_path/kind``."""
    at = tmp_path / kind
    if kind == "regfile":
        at.write_text("not a directory\n")
    elif kind == "fifo":
        os.mkfifo(at)
    elif kind == "dangling":
        at.symlink_to(tmp_path / "nowhere")
    else:  # two links, each to the other
        at.symlink_to(tmp_path / "loop2")
        (tmp_path / "loop2").symlink_to(at)
    return at


@pytest.mark.parametrize(("where", "key"), [("state_dir", "agent.state_dir"), ("spool", "sinks[0].spool")])
@pytest.mark.parametrize(("kind", "below"), [("loop", False), ("loop", True), ("regfile", False),
                                             ("regfile", True), ("fifo", False), ("dangling", False)])
def test_run_refuses_what_is_in_the_way_with_the_message_of_the_check(tmp_path: Path, where: str, key: str,
                                                                      kind: str, below: bool) -> None:
    at = _in_the_way(tmp_path, kind)
    path = _config(tmp_path, **{where: str(at / "sub" if below else at)})
    (problem,) = check_file(path)
    assert problem.key == key and problem.severity == "error"
    assert "not a directory (a " in problem.reason
    if kind == "loop":
        assert f"a symbolic link that loops is in the way{f' at {at}' if below else ''})" in problem.reason
    generate_keypair(tmp_path / "keys")
    # a subprocess with a bound: a FIFO opened would wait for a writer for good
    res = run_cli(["run", "--once", "--probes", "none", "--config", str(path)], cwd=tmp_path, timeout=30)
    assert res.returncode == 2 and b"Traceback" not in res.stderr, res.stderr
    assert res.stderr.decode().splitlines() == [f"hoststamp: configuration error: {problem}"]
    if where == "spool":  # refused before anything is made
        assert not (tmp_path / "state").exists()
