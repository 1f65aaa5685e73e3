"""Key and credentials files named in the configuration are read only when they are regular files of a key's
size: a FIFO would hold `config check`, `run` and a reload for ever, and a device such as /dev/zero would fill
the memory. Each is a problem naming its key; nothing hangs (every check runs in a subprocess with a bound)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import SigningError
from agent.signing.keys import generate_keypair, load_signing_key, load_verify_key
from tests.helpers import run_cli

#: the file's key is the one looked at only when the environment names none
NO_ENV_KEY = {"HOSTSTAMP_KEY": ""}


def _listener(tmp_path: Path, key: str) -> str:
    return (f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/in.sock"\n'
            f'guest_signatures = "verify"\ntrusted_keys = ["{key}"]\n')


@pytest.mark.parametrize("kind", ["fifo", "zero", "big"])
def test_a_trusted_key_that_is_no_key_file_is_a_problem_not_a_hang(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "guest.pub"
        os.mkfifo(path)
    elif kind == "zero":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "guest.pub"
        path.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * (1 << 20))
    cfg = tmp_path / "c.toml"
    cfg.write_text(_listener(tmp_path, str(path)))
    res = run_cli(["config", "check", str(cfg)], cwd=tmp_path, timeout=20)
    assert res.returncode == 2, res.stderr
    assert b"listeners[0].trusted_keys" in res.stderr and b"cannot read key" in res.stderr
    assert b"Traceback" not in res.stderr


def test_a_nats_credentials_fifo_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "user.creds"
    os.mkfifo(fifo)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[sinks]]\nuri = "nats://127.0.0.1:4222/s"\ncreds = "{fifo}"\n')
    res = run_cli(["config", "check", str(cfg)], cwd=tmp_path, timeout=20)
    assert res.returncode == 2 and b"sinks[0].creds" in res.stderr and b"not a file" in res.stderr, res.stderr


def test_key_files_with_a_nul_in_their_path_are_refused_in_words(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="NUL"):
        load_verify_key(f"{tmp_path}/a\x00b.pub")
    with pytest.raises(SigningError, match="NUL"):
        load_signing_key(f"{tmp_path}/a\x00b.key")
    cfg = tmp_path / "c.toml"
    cfg.write_text(_listener(tmp_path, "/tmp/\\u0000x"))
    res = run_cli(["config", "check", str(cfg)], cwd=tmp_path, timeout=20)
    assert res.returncode == 2 and b"Traceback" not in res.stderr, res.stderr


def test_a_real_key_is_still_read(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "k")
    assert load_verify_key(tmp_path / "k" / "host.pub").keyid == key.keyid
    assert load_signing_key(tmp_path / "k" / "host.key").keyid == key.keyid


def test_config_check_refuses_the_host_key_run_would_refuse(tmp_path: Path) -> None:
    """`[agent] key` is looked at as `run` loads it: missing, readable by others, or a public key is a problem
    naming agent.key (exit 2); a good key passes."""
    generate_keypair(tmp_path / "k")
    key = tmp_path / "k" / "host.key"
    cfg = tmp_path / "c.toml"
    cases = [(str(tmp_path / "none.key"), "no such file"), (str(tmp_path / "k" / "host.pub"), "a public key")]
    for path, said in cases:
        cfg.write_text(f'[agent]\nkey = "{path}"\n[[sinks]]\nuri = "stdout:"\n')
        res = run_cli(["config", "check", str(cfg)], cwd=tmp_path, env=NO_ENV_KEY)
        assert res.returncode == 2 and b"agent.key" in res.stderr and said.encode() in res.stderr, res.stderr
    cfg.write_text(f'[agent]\nkey = "{key}"\n[[sinks]]\nuri = "stdout:"\n')
    key.chmod(0o640)
    res = run_cli(["config", "check", str(cfg)], cwd=tmp_path, env=NO_ENV_KEY)
    assert res.returncode == 2 and b"agent.key" in res.stderr and b"chmod 600" in res.stderr
    # overridden by HOSTSTAMP_KEY, the file's key is not the one run takes: the variable's is looked at instead
    good = generate_keypair(tmp_path / "good")
    env = {"HOSTSTAMP_KEY": str(good.path)}
    assert run_cli(["config", "check", str(cfg)], cwd=tmp_path, env=env).returncode == 0
    env = {"HOSTSTAMP_KEY": str(tmp_path / "good" / "host.pub")}
    res = run_cli(["config", "check", str(cfg)], cwd=tmp_path, env=env)
    assert res.returncode == 2 and b"HOSTSTAMP_KEY" in res.stderr and b"a public key" in res.stderr, res.stderr
    key.chmod(0o600)
    assert run_cli(["config", "check", str(cfg)], cwd=tmp_path, env=NO_ENV_KEY).returncode == 0


def test_keys_generate_replaces_what_is_at_the_public_key_and_leaves_no_half_pair(tmp_path: Path) -> None:
    """A FIFO at host.pub is replaced, not opened (it hung); a link there is replaced, not followed (its target
    was overwritten); a directory there fails the whole pair (a lone host.key was left)."""
    fifo_dir, link_dir, dir_dir = tmp_path / "fifo", tmp_path / "link", tmp_path / "dir"
    for d in (fifo_dir, link_dir, dir_dir):
        d.mkdir()
    os.mkfifo(fifo_dir / "host.pub")
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (link_dir / "host.pub").symlink_to(precious)
    (dir_dir / "host.pub").mkdir()
    for d in (fifo_dir, link_dir):
        res = run_cli(["keys", "generate", "--dir", str(d)], cwd=tmp_path, timeout=20)
        assert res.returncode == 0, res.stderr
        key = load_signing_key(d / "host.key")
        assert load_verify_key(d / "host.pub").keyid == key.keyid and not (d / "host.pub").is_symlink()
    assert precious.read_text() == "keep me"
    res = run_cli(["keys", "generate", "--dir", str(dir_dir)], cwd=tmp_path, timeout=20)
    assert res.returncode == 1 and b"cannot write keys" in res.stderr
    assert sorted(p.name for p in dir_dir.iterdir()) == ["host.pub"]  # no host.key without its public half
