"""What a reload says: a restart-only setting is compared with the value in effect (set back, nothing to say),
and a reload refused for a metrics address or a stranded spool names its file, as every other refusal does."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, wait_for

_RESTART = "reload: agent.host_id differs from the running value"


def _with_host_id(text: str, host_id: str) -> str:
    return text.replace("[agent]\n", f'[agent]\nhost_id = "{host_id}"\n', 1)


def test_a_restart_only_setting_set_back_is_not_warned_of(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    cfg = tmp_path / "a.toml"
    base = config_text([f"file:{tmp_path / 'out.ndjson'}"], metrics=False)
    cfg.write_text(_with_host_id(base, "first"))
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        cfg.write_text(_with_host_id(base, "other"))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, what="the first reload")
        assert agent.log().count(_RESTART) == 1
        cfg.write_text(_with_host_id(base, "first"))  # what runs: nothing changes at the next restart
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 2, what="the second reload")
        assert agent.log().count(_RESTART) == 1
        assert agent.stop() == 0


def test_a_reload_refused_for_its_metrics_address_names_the_file(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        cfg = tmp_path / "a.toml"
        cfg.write_text(config_text([f"file:{tmp_path / 'out.ndjson'}"]))
        with AgentProcess(tmp_path, cfg) as agent:
            agent.wait_ready()
            port = taken.getsockname()[1]
            cfg.write_text(config_text([f"file:{tmp_path / 'out.ndjson'}"], metrics=False)
                           + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
            agent.signal(signal.SIGHUP)
            wait_for(lambda: agent.status()["reloads"]["failed"] == 1, what="the refused reload")
            assert agent.status()["reloads"]["last_error"].startswith(f"{cfg}: metrics.listen: cannot listen on ")
            assert agent.stop() == 0
    finally:
        taken.close()


def test_restart_only_settings_are_compared_as_they_take_effect(tmp_path: Path) -> None:
    """The machine's own host id written out, or the state directory spelled another way, is no change."""
    from agent.generation import host_id

    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    cfg = tmp_path / "a.toml"
    base = config_text([f"file:{tmp_path / 'out.ndjson'}"], metrics=False)
    cfg.write_text(base)
    with AgentProcess(tmp_path, cfg) as agent:
        agent.wait_ready()
        same = base.replace('state_dir = "state"', f'state_dir = "./state/"\nhost_id = "{host_id(None)}"')
        assert same != base
        cfg.write_text(same)
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["reloads"]["ok"] == 1, what="the reload")
        assert "differs from the running value" not in agent.log()
        assert agent.stop() == 0
