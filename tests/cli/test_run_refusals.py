"""What `run`, `probe` and `verify` refuse before they start, and how they name it: a listener whose socket file
cannot be made (as `config check` finds it, exit 2), a key file given on the command line (named with its
option)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    return tmp_path


def _regular_file(p: Path) -> Path:
    p.write_text("in the way")
    return p


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


def _missing_directory(p: Path) -> Path:
    return p / "nodir" / "in.sock"


def _directory_is_a_file(p: Path) -> Path:
    p.write_text("a file, not a directory")
    return p / "in.sock"


BLOCKERS: dict[str, Callable[[Path], Path]] = {
    "regular file": _regular_file, "fifo": _fifo, "missing directory": _missing_directory,
    "directory is a file": _directory_is_a_file,
}


@pytest.mark.parametrize("blocker", list(BLOCKERS))
def test_run_refuses_a_blocked_listener_socket_as_config_check_does(workdir: Path, blocker: str) -> None:
    sock = BLOCKERS[blocker](workdir / "in.sock")
    cfg = workdir / "h.toml"
    cfg.write_text(f'[agent]\nstate_dir = "state"\n[[sinks]]\nuri = "file:out.ndjson"\n'
                   f'[[listeners]]\nuri = "unix:{sock}"\n')
    check = run_cli(["config", "check", str(cfg)], cwd=workdir)
    assert check.returncode == 2
    said = check.stderr.decode().splitlines()[0]
    assert said.startswith(f"{cfg}: listeners[0].uri: cannot listen at {sock}")
    res = run_cli(["run", "--config", str(cfg), "--probes", "none"], cwd=workdir, timeout=30)
    assert res.returncode == 2, res.stderr
    assert res.stderr.decode().splitlines() == [f"hoststamp: configuration error: {said}"]
    # refused before anything started: no state directory made, no sink opened
    assert not (workdir / "state").exists() and not (workdir / "out.ndjson").exists()


@pytest.mark.parametrize("blocker", list(BLOCKERS))
def test_run_refuses_a_blocked_listen_option_naming_the_option(workdir: Path, blocker: str) -> None:
    sock = BLOCKERS[blocker](workdir / "in.sock")
    res = run_cli(["run", "--probes", "none", "--sink", "stdout:", "--listen", f"unix:{sock}"], cwd=workdir,
                  timeout=30)
    assert res.returncode == 2, res.stderr
    err = res.stderr.decode().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hoststamp: configuration error: --listen: cannot listen at {sock}")


@pytest.mark.parametrize("with_config", [False, True])
def test_a_listener_without_its_directory_is_refused_before_the_agent_starts(workdir: Path,
                                                                              with_config: bool) -> None:
    """With the embedded default or a file alike: said before any sink opens, so no drain (and none of its
    ``drain_timeout``) comes before it."""
    cfg = workdir / "h.toml"
    cfg.write_text('[[sinks]]\nuri = "archive:var/archive"\n')
    sock = workdir / "nonexistent-dir" / "x.sock"
    args = ["run", *(["--config", str(cfg)] if with_config else []), "--listen", f"unix:{sock}"]
    res = run_cli(args, cwd=workdir, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.decode().splitlines() == [
        f"hoststamp: configuration error: --listen: cannot listen at {sock}: directory {sock.parent} does not exist"]
    assert not (workdir / "var").exists()  # neither the state directory nor the archive was made


def test_a_listener_that_fails_for_a_runtime_reason_stays_a_runtime_failure(workdir: Path) -> None:
    """Another process listening at the path is no configuration error: exit 1, as before."""
    path = workdir / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        cfg = workdir / "h.toml"
        cfg.write_text(f'[[sinks]]\nuri = "file:out.ndjson"\n[[listeners]]\nuri = "unix:{path}"\n')
        assert run_cli(["config", "check", str(cfg)], cwd=workdir).returncode == 0
        res = run_cli(["run", "--config", str(cfg), "--probes", "none"], cwd=workdir, timeout=60)
    assert res.returncode == 1, res.stderr
    assert f"unix:{path}: another process is listening there" in res.stderr.decode()


@pytest.mark.parametrize(("given", "said"), [
    ("keys/nope.key", "cannot read private key: no such file"),
    ("keys/host.pub", "a public key; the host key is the private one"),
])
def test_run_and_probe_name_the_key_option(workdir: Path, given: str, said: str) -> None:
    for args in (["run", "--probes", "none", "--sink", "stdout:"], ["probe", "link"]):
        res = run_cli([*args, "--key", given], cwd=workdir, timeout=30)
        assert res.returncode == 2, res.stderr
        assert res.stderr.decode().splitlines()[-1].startswith(f"hoststamp: key error: --key {given}: {said}")


@pytest.mark.parametrize("flag", ["--pub", "--guest-pub"])
def test_verify_names_the_key_option(workdir: Path, flag: str) -> None:
    (workdir / "x.ndjson").write_bytes(b"")
    for given, said in (("keys/nope.pub", "cannot read key"), ("keys/host.key", "a private key")):
        extra = ["--pub", "keys/host.pub"] if flag != "--pub" else []
        res = run_cli(["verify", *extra, flag, given, "x.ndjson"], cwd=workdir)
        lines = res.stderr.decode().splitlines()
        assert res.returncode == 2, lines
        assert len(lines) == 1 and lines[0].startswith(f"hoststamp verify: {flag} {given}: {said}"), lines
