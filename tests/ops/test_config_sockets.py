"""`config check` finds a listener whose socket file cannot be made (unix:PATH, fcvsock:UDS_PATH:PORT) without
opening, connecting to or making anything."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agent.configcheck import check_file
from tests.helpers import run_cli


def _config(tmp_path: Path, *uris: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text('[[sinks]]\nuri = "stdout:"\n' + "".join(f'[[listeners]]\nuri = "{u}"\n' for u in uris))
    return path


def _put(at: Path, kind: str) -> None:
    if kind == "regfile":
        at.write_text("x\n")
    elif kind == "directory":
        at.mkdir()
    elif kind == "dangling":
        at.symlink_to(at.parent / "nowhere")


@pytest.mark.parametrize(("kind", "said"), [("regfile", "a regular file"), ("directory", "a directory"),
                                            ("dangling", "a symbolic link to nothing")])
@pytest.mark.parametrize("scheme", ["unix", "fcvsock"])
def test_something_that_is_no_socket_at_the_socket_path_fails_the_check(tmp_path: Path, kind: str, said: str,
                                                                       scheme: str) -> None:
    sock = tmp_path / ("v.sock_52" if scheme == "fcvsock" else "in.sock")
    _put(sock, kind)
    uri = f"fcvsock:{tmp_path}/v.sock:52" if scheme == "fcvsock" else f"unix:{sock}"
    problems = check_file(_config(tmp_path, uri))
    assert [(p.key, p.severity) for p in problems] == [("listeners[0].uri", "error")]
    assert problems[0].reason == f"cannot listen at {sock}: {said} is there, not a socket"


@pytest.mark.parametrize("scheme", ["unix", "fcvsock"])
def test_a_socket_directory_that_is_missing_or_no_directory_fails_the_check(tmp_path: Path, scheme: str) -> None:
    (tmp_path / "regfile").write_text("x\n")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")

    def uri(directory: str) -> str:
        return f"fcvsock:{tmp_path}/{directory}/v.sock:7" if scheme == "fcvsock" else f"unix:{tmp_path}/{directory}/s"

    name = "v.sock_7" if scheme == "fcvsock" else "s"
    problems = check_file(_config(tmp_path, uri("nodir/deeper"), uri("regfile"), uri("loop1")))
    assert [p.key for p in problems] == ["listeners[0].uri", "listeners[1].uri", "listeners[2].uri"]
    assert [p.reason for p in problems] == [
        f"cannot listen at {tmp_path}/nodir/deeper/{name}: directory {tmp_path}/nodir/deeper does not exist",
        f"cannot listen at {tmp_path}/regfile/{name}: directory {tmp_path}/regfile: not a directory "
        "(a regular file is in the way)",
        f"cannot listen at {tmp_path}/loop1/{name}: directory {tmp_path}/loop1: not a directory "
        "(a symbolic link that loops is in the way)"]


def test_a_fifo_at_the_socket_path_is_named_and_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "in.sock")
    path = _config(tmp_path, f"unix:{tmp_path}/in.sock")
    # a subprocess with a bound: opening the FIFO would wait for a writer for good
    res = run_cli(["config", "check", str(path)], cwd=tmp_path, timeout=30)
    assert res.returncode == 2
    assert (f"{path}: listeners[0].uri: cannot listen at {tmp_path}/in.sock: a FIFO is there, not a socket"
            in res.stderr.decode())


def test_a_socket_or_nothing_yet_passes_and_nothing_is_made_or_connected(tmp_path: Path) -> None:
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(tmp_path / "left.sock"))  # a socket file nobody listens on, as an agent that stopped leaves
    left.close()
    before = sorted(os.listdir(tmp_path))
    path = _config(tmp_path, f"unix:{tmp_path}/left.sock", f"unix:{tmp_path}/new.sock", "unix:@abstract-name",
                   f"fcvsock:{tmp_path}/v.sock:52", "unix:relative.sock", "vsock:any:5000")
    assert check_file(path) == []
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "c.toml"])
