"""A listener `name` is the hostpeer of Firecracker (and NATS) listeners only: elsewhere it is warned of."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from agent import config
from agent.configcheck import check_file
from tests.helpers import run_cli


@pytest.mark.parametrize("uri", ["unix:{tmp}/in.sock", "vsock:any:5000", "VSOCK:any:5000"])
def test_a_name_on_a_unix_or_vsock_listener_is_warned_of(tmp_path: Path, uri: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/other.sock"\n'
                    f'[[listeners]]\nuri = "{uri.format(tmp=tmp_path)}"\nname = "guest-7"\n')
    problems = check_file(path)
    assert [(p.key, p.severity) for p in problems] == [("listeners[1].name", "warning")]
    assert "not used" in problems[0].reason and "fcvsock:" in problems[0].reason
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    assert res.returncode == 0 and f"{path}: listeners[1].name: warning: not used".encode() in res.stderr
    # the config runs; what run would log is the same (key, reason)
    cfg = config.load(path)
    assert cfg.warnings() == [("listeners[1].name", problems[0].reason)]


@pytest.mark.parametrize("uri", ["fcvsock:{tmp}/fc.sock:52", "nats://127.0.0.1:4222/guests.>"])
def test_a_name_where_it_is_stamped_is_no_warning(tmp_path: Path, uri: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "{uri.format(tmp=tmp_path)}"\n'
                    'name = "guest-7"\n')
    assert check_file(path) == []
    assert config.load(path).warnings() == []


def test_a_name_that_is_refused_is_not_warned_of_as_well(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/in.sock"\nname = " "\n')
    assert [(p.key, p.severity) for p in check_file(path)] == [("listeners[0].name", "error")]


def test_run_logs_the_warning_and_runs(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", str(tmp_path)], cwd=tmp_path).returncode == 0
    path = tmp_path / "c.toml"
    off = "".join(f"[probes.{p}]\nenabled = false\n" for p in ("lve", "mounts", "taskstats", "link"))
    path.write_text(f'[agent]\nstate_dir = "{tmp_path}/state"\n[[sinks]]\nuri = "file:{tmp_path}/out.ndjson"\n'
                    f'[[listeners]]\nuri = "unix:{tmp_path}/in.sock"\nname = "guest-7"\n{off}')
    res = run_cli(["run", "--once", "--config", str(path), "--key", str(tmp_path / "host.key")], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(b"listeners[0].name: not used") == 1


def test_a_reload_logs_the_warning_too(tmp_path: Path) -> None:
    from tests.ops.agentproc import AgentProcess, config_text, wait_for

    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    cfg = tmp_path / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"]))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        assert "not used" not in agent.log()
        cfg.write_text(config_text(["file:out/a.ndjson"]) +
                       f'[[listeners]]\nuri = "unix:{tmp_path}/in.sock"\nname = "guest-7"\n')
        agent.signal(signal.SIGHUP)
        wait_for(lambda: "listeners[0].name: not used" in agent.log(), what="the warning logged on the reload")
        assert agent.stop() == 0


@pytest.mark.parametrize(("uri", "key"), [
    ("vsock:any:5000", "mode"), ("nats://127.0.0.1:4222/guests.>", "mode"),
    ("fcvsock:{tmp}/fc.sock:52", "max_connections_per_peer"),
    ("nats://127.0.0.1:4222/guests.>", "max_connections_per_peer"),
])
def test_a_socket_option_a_listener_has_no_use_for_is_warned_of(tmp_path: Path, uri: str, key: str) -> None:
    value = "0o600" if key == "mode" else "4"
    path = tmp_path / "c.toml"
    name = "" if uri.startswith("vsock:") else 'name = "g"\n'
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "{uri.format(tmp=tmp_path)}"\n'
                    f'{name}{key} = {value}\n')
    problems = check_file(path)
    assert [(p.key, p.severity) for p in problems] == [(f"listeners[0].{key}", "warning")]
    assert problems[0].reason.startswith("not used: ")
    assert config.load(path).warnings() == [(f"listeners[0].{key}", problems[0].reason)]


def test_socket_options_where_they_are_used_are_not_warned_of(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/in.sock"\nmode = 0o600\n'
                    'max_connections_per_peer = 4\n[[listeners]]\nuri = "vsock:any:5000"\n'
                    'max_connections_per_peer = 4\n'
                    f'[[listeners]]\nuri = "fcvsock:{tmp_path}/fc.sock:52"\nname = "vm"\nmode = 0o600\n')
    assert check_file(path) == []
    assert config.load(path).warnings() == []


@pytest.mark.parametrize(("policy", "warned"), [(None, True), ('"off"', True), ('"verify"', False),
                                                ('"require"', False)])
def test_trusted_keys_where_no_guest_signature_is_checked_are_warned_of(tmp_path: Path, policy: str | None,
                                                                        warned: bool) -> None:
    assert run_cli(["keys", "generate", "--dir", "guest"], cwd=tmp_path).returncode == 0
    path = tmp_path / "c.toml"
    setting = "" if policy is None else f"guest_signatures = {policy}\n"
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/in.sock"\n{setting}'
                    f'trusted_keys = ["{tmp_path}/guest/host.pub"]\n')
    problems = check_file(path)
    expected = [("listeners[0].trusted_keys", "warning")] if warned else []
    assert [(p.key, p.severity) for p in problems] == expected
    assert config.load(path).warnings() == [(p.key, p.reason) for p in problems]
    if warned:
        assert problems[0].reason.startswith("not used: guest_signatures is off")
