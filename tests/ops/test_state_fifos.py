"""Files of the state directory that are FIFOs (put there by hand, or by a mistake) are never waited on: the
sequence state is replaced as unreadable, a lock or borrowed-numbers file is a configuration error naming the
state directory, and `status` says it found no status. Every command runs in a subprocess with a bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import run_cli


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{tmp_path}/state"\n[[sinks]]\nuri = "file:{tmp_path}/out.ndjson"\n')
    assert run_cli(["keys", "generate", "--dir", str(tmp_path / "k")], cwd=tmp_path).returncode == 0
    (tmp_path / "state").mkdir()
    return cfg


def _run_once(tmp_path: Path, cfg: Path) -> tuple[int, bytes]:
    key = str(tmp_path / "k" / "host.key")
    res = run_cli(["run", "--once", "--probes", "none", "--config", str(cfg), "--key", key], cwd=tmp_path, timeout=30)
    return res.returncode, res.stderr


def test_a_fifo_for_the_sequence_state_is_replaced_not_waited_on(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    os.mkfifo(tmp_path / "state" / "sequences.json")
    code, err = _run_once(tmp_path, cfg)
    assert code == 0, err
    assert b"sequences.json is unreadable" in err
    assert (tmp_path / "state" / "sequences.json").is_file()  # written anew as a regular file


@pytest.mark.parametrize("name", ["sequences.lock", "sequences.borrowed"])
def test_a_fifo_for_a_lock_is_a_configuration_error_naming_the_state_directory(tmp_path: Path, name: str) -> None:
    cfg = _config(tmp_path)
    os.mkfifo(tmp_path / "state" / name)
    code, err = _run_once(tmp_path, cfg)
    assert code == 2 and b"agent.state_dir" in err and name.encode() in err and b"not a regular file" in err, err
    assert b"standard output" not in err and b"Traceback" not in err


def test_status_of_a_fifo_says_there_is_no_status(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "status.json")
    res = run_cli(["status", "--state-dir", str(tmp_path)], cwd=tmp_path, timeout=30)
    assert res.returncode == 1 and b"no status at" in res.stderr, res.stderr
