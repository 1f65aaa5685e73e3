"""A reload checks the host key of the re-read file as `run` loads it: one `run` would refuse fails the reload
(the running configuration stays), named ``agent.key``; the same valid key says nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, wait_for


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    return tmp_path


def _config(key: str) -> str:
    return config_text(["file:out/a.ndjson"], metrics=False).replace("[agent]\n", f'[agent]\nkey = "{key}"\n', 1)


def _bad_keys(workdir: Path) -> list[str]:
    """A key file for each way `run` refuses one: missing, readable by others, a public key, a FIFO."""
    open_key = workdir / "keys" / "open.key"
    open_key.write_bytes((workdir / "keys" / "host.key").read_bytes())
    open_key.chmod(0o644)
    os.mkfifo(workdir / "keys" / "fifo.key", 0o600)
    return ["keys/missing.key", "keys/open.key", "keys/host.pub", "keys/fifo.key"]


def test_a_reload_refuses_a_host_key_run_would_refuse(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(_config("keys/host.key"))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        for n, bad in enumerate(_bad_keys(workdir), start=1):
            cfg.write_text(_config(bad))
            # what `run` says of this file (it stops at the key, before the state directory the agent holds)
            said = run_cli(["run", "--config", str(cfg)], cwd=workdir, timeout=30)
            assert said.returncode == 2
            refusal = said.stderr.decode().splitlines()[-1].removeprefix("hoststamp: configuration error: ")
            assert refusal.startswith(f"{cfg}: agent.key: {bad}: ")
            agent.signal(signal.SIGHUP)
            status = wait_for(lambda n=n: (s := agent.status())["reloads"]["failed"] == n and s,
                              what=f"the reload to {bad} to fail")
            assert status["reloads"]["last_error"] == refusal
            assert status["reloads"]["last_applied"] is False and status["generation"] == 1
            assert f"reload failed, keeping the running configuration (generation 1): {refusal}" in agent.log()
        assert "takes effect at the next restart" not in agent.log()
        assert agent.status()["reloads"]["ok"] == 0
        # the same valid key as at start: the reload goes through, and nothing is said of the key
        before = len(agent.log())
        cfg.write_text(_config("keys/host.key"))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, what="the reload to the valid key")
        assert agent.status()["reloads"]["last_ok"] is True
        assert "key" not in agent.log()[before:], agent.log()[before:]
        assert agent.stop() == 0


def test_the_key_file_the_agent_started_with_going_bad_is_warned_of_not_a_refused_reload(workdir: Path) -> None:
    # the running agent signs with the key it loaded; the file itself turning bad is for the next start to refuse
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(_config("keys/host.key"))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        (workdir / "keys" / "host.key").chmod(0o644)
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, what="the reload to go through")
        assert agent.status()["reloads"]["failed"] == 0
        assert "reload: the host key file has a problem now" in agent.log()
        assert "keys/host.key" in agent.log().split("reload: the host key file has a problem now", 1)[1]
        assert agent.stop() == 0


def test_the_started_key_file_by_another_name_is_the_same_file(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(_config("keys/host.key"))
    (workdir / "alias.key").symlink_to(workdir / "keys" / "host.key")
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        (workdir / "keys" / "host.key").chmod(0o644)
        for n, spelling in enumerate(("keys/../keys/host.key", "alias.key"), start=1):
            cfg.write_text(_config(spelling))
            agent.signal(signal.SIGHUP)
            wait_for(lambda n=n: agent.status()["reloads"]["ok"] == n, what=f"the reload to {spelling}")
        assert agent.status()["reloads"]["failed"] == 0
        assert agent.stop() == 0


def test_another_key_in_the_file_is_said_once_per_reload(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(_config("keys/host.key"))
    assert run_cli(["keys", "generate", "--dir", "other"], cwd=workdir).returncode == 0
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        agent.signal(signal.SIGHUP)  # the same key: nothing to say
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, what="the first reload")
        assert "is another key" not in agent.log()
        (workdir / "keys" / "host.key").write_bytes((workdir / "other" / "host.key").read_bytes())
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 2, what="the second reload")
        assert agent.log().count("reload: the host key keys/host.key is another key") == 1
        assert agent.stop() == 0


def test_with_key_on_the_command_line_the_files_agent_key_is_not_in_effect(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(_config("keys/host.key"))
    with AgentProcess(workdir, cfg, run_args=("--key", "keys/host.key")) as agent:
        agent.wait_ready()
        cfg.write_text(_config("keys/missing.key"))  # --key wins: the file's key is never used
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, what="the reload")
        assert "agent.key" not in agent.log() and "host key" not in agent.log()
        assert agent.stop() == 0
