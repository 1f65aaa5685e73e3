"""The agent as operators run it: a real process, real signals, /metrics over loopback, the status verb."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.signals import SAME_SIGNAL
from tests.helpers import run_cli
from tests.ops.agentproc import AgentProcess, config_text, metric, sequences, wait_for
from tests.ops.agentproc import config_text as _config_text


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    assert run_cli(["keys", "generate", "--dir", "keys"], cwd=tmp_path).returncode == 0
    return tmp_path


def _contiguous(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_metrics_status_and_clean_stop(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"]))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(sequences(workdir / "out" / "a.ndjson")) >= 16, what="events in the file sink")

        def scraped_with_sent_events() -> str | None:
            t = agent.scrape()
            return t if metric(t, "hoststamp_sink_events_sent_total") else None

        text = wait_for(scraped_with_sent_events, what="a scrape with sent events")
        assert metric(text, "hoststamp_probe_success", probe="cgroup") == 1.0
        assert (metric(text, "hoststamp_probe_runs_total", probe="cgroup") or 0) >= 1
        assert (metric(text, "hoststamp_events_signed_total") or 0) >= 1
        assert metric(text, "hoststamp_sink_up", sink="file:out/a.ndjson") == 1.0
        assert metric(text, "hoststamp_sink_events_dropped_total", sink="file:out/a.ndjson", reason="queue_full") == 0
        assert metric(text, "hoststamp_sink_queue_capacity", sink="file:out/a.ndjson") == 10000
        assert metric(text, "hoststamp_build_info", version="0.1.0") == 1.0
        assert metric(text, "hoststamp_config_generation") == 1.0
        assert metric(text, "process_resident_memory_bytes") is not None

        res = run_cli(["status", "--config", str(cfg)], cwd=workdir, timeout=20)
        out = res.stdout.decode()
        assert res.returncode == 0, out + res.stderr.decode()
        assert "cgroup" in out and " ok " in out and "file:out/a.ndjson" in out and " up " in out
        as_json = orjson.loads(run_cli(["status", "--state-dir", "state", "--json"], cwd=workdir).stdout)
        assert as_json["probes"]["cgroup"]["last_success"] is True
        # the file changed since (a reload would refuse it): its state_dir is still where the status is
        cfg.write_text(cfg.read_text().replace("[agent]\n", "[agent]\nbogus_key = 1\n", 1))
        res = run_cli(["status", "--config", str(cfg)], cwd=workdir, timeout=20)
        assert res.returncode == 0 and "cgroup" in res.stdout.decode(), res.stderr.decode()
        assert b"agent.bogus_key" in res.stderr and b"read all the same" in res.stderr

        assert agent.stop() == 0
    seqs = sequences(workdir / "out" / "a.ndjson")
    assert _contiguous(seqs), "a clean stop delivers everything that was signed"
    assert "Traceback" not in agent.log()
    # after the agent is gone its last status says so, and the verb fails
    stopped = run_cli(["status", "--state-dir", "state"], cwd=workdir, timeout=20)
    assert stopped.returncode == 1 and b"STOPPED" in stopped.stdout


@pytest.mark.parametrize("sink_keys", ["", "queue_size = 2\nbatch_max = 1\n"], ids=["roomy", "producers-blocked"])
def test_sighup_switches_sinks_without_losing_or_reordering(workdir: Path, sink_keys: str) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"], sink_keys=sink_keys))
    a, b = workdir / "out" / "a.ndjson", workdir / "out" / "b.ndjson"
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(sequences(a)) >= 16, what="events in the first sink")
        cfg.write_text(config_text(["file:out/b.ndjson"], sink_keys=sink_keys))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: len(sequences(b)) >= 16, what="events in the sink of the new configuration")
        wait_for(lambda: agent.status()["generation"] == 2, what="generation 2 in the status file")
        text = agent.scrape()
        assert metric(text, "hoststamp_config_reloads_total", result="success") == 1.0
        assert metric(text, "hoststamp_config_last_reload_successful") == 1.0
        if sink_keys:  # a queue of 2 for rounds of 8 readings: the probe did wait for room
            assert (metric(text, "hoststamp_sink_queue_blocked_total", sink="file:out/b.ndjson") or 0) > 0
        assert agent.stop() == 0
    old, new = sequences(a), sequences(b)
    assert _contiguous(old) and _contiguous(new)
    assert new[0] == old[-1] + 1, "the old sink got every event made before the switch, the new one the rest"
    assert "reloading" in agent.log()


def test_bad_config_on_sighup_keeps_the_old_one_running(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"]))
    a = workdir / "out" / "a.ndjson"
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(sequences(a)) >= 8, what="events before the bad reload")
        cfg.write_text(config_text(["file:out/b.ndjson"], extra="[metrics.extra]\nbogus = 1\n"))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in agent.log(), what="the reload failure in the log")
        log = agent.log()
        assert "metrics.extra" in log and str(cfg.name) in log  # says which key of which file
        seen = len(sequences(a))
        wait_for(lambda: len(sequences(a)) >= seen + 8, what="events still flowing to the old sink")
        assert not (workdir / "out" / "b.ndjson").exists()
        text = agent.scrape()
        assert metric(text, "hoststamp_config_reloads_total", result="failure") == 1.0
        assert metric(text, "hoststamp_config_last_reload_successful") == 0.0
        wait_for(lambda: agent.status()["reloads"]["last_ok"] is False, what="the failure in the status file")
        status = run_cli(["status", "--state-dir", "state"], cwd=workdir, timeout=20)
        assert b"reload FAILED" in status.stdout
        # a file that is not TOML at all is refused the same way
        cfg.write_text("[[sinks]\nuri=")
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.log().count("reload failed") >= 2, what="the second reload failure")
        assert agent.proc.poll() is None
        assert agent.stop() == 0
    assert _contiguous(sequences(a))


def test_a_metrics_address_that_cannot_be_bound_fails_the_reload_and_keeps_metrics(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"]))
    a = workdir / "out" / "a.ndjson"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with AgentProcess(workdir, cfg) as agent:
            agent.wait_ready()
            wait_for(lambda: len(sequences(a)) >= 8, what="events before the reload")
            url = agent.metrics_url()
            port = taken.getsockname()[1]
            cfg.write_text(config_text(["file:out/b.ndjson"], metrics=False)
                           + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
            agent.signal(signal.SIGHUP)
            wait_for(lambda: "reload failed" in agent.log(), what="the reload failure in the log")
            assert f"127.0.0.1:{port}" in agent.log() and "metrics.listen" in agent.log()
            assert agent.metrics_url() == url
            text = agent.scrape()  # still served where it was
            assert metric(text, "hoststamp_config_reloads_total", result="failure") == 1.0
            assert metric(text, "hoststamp_config_last_reload_successful") == 0.0
            assert metric(text, "hoststamp_config_generation") == 1.0
            seen = len(sequences(a))
            wait_for(lambda: len(sequences(a)) >= seen + 8, what="events still flowing to the old sink")
            assert not (workdir / "out" / "b.ndjson").exists()
            assert agent.stop() == 0
    finally:
        taken.close()


def test_a_listener_that_cannot_listen_after_a_reload_fails_the_reload(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"]))
    (workdir / "plain").write_text("a regular file, where a directory should be")
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        cfg.write_text(config_text(["file:out/b.ndjson"]) + '[[listeners]]\nuri = "unix:plain/x.sock"\n')
        agent.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in agent.log(), what="the reload failure in the log")
        assert "unix:plain/x.sock" in agent.log()
        assert "unix:plain/x.sock: unix:plain/x.sock" not in agent.log()  # the listener named once per line
        text = agent.scrape()
        assert metric(text, "hoststamp_config_reloads_total", result="failure") == 1.0
        assert metric(text, "hoststamp_config_reloads_total", result="success") == 0.0
        assert metric(text, "hoststamp_config_last_reload_successful") == 0.0
        wait_for(lambda: agent.status()["reloads"]["last_ok"] is False, what="the failure in the status file")
        assert agent.status()["reloads"]["last_applied"] is True  # its configuration runs, without the listener
        # the rest of the new configuration runs
        wait_for(lambda: len(sequences(workdir / "out" / "b.ndjson")) >= 8, what="events in the new sink")
        assert agent.stop() == 0


def test_sd_notify_ready_and_watchdog(workdir: Path) -> None:
    sock_path = workdir / "notify.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(sock_path))
    srv.settimeout(15)
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"], metrics=False))
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}  # a ping every 0.2 s
    try:
        with AgentProcess(workdir, cfg, env=env) as agent:
            got: list[str] = []
            while not (any("READY=1" in m for m in got) and sum("WATCHDOG=1" in m for m in got) >= 2):
                got.append(srv.recv(4096).decode())  # bounded by the socket timeout
            agent.wait_ready()
            agent.signal(signal.SIGHUP)
            while not any("RELOADING=1" in m for m in got):
                got.append(srv.recv(4096).decode())
            assert agent.stop() == 0
            while not any("STOPPING=1" in m for m in got):
                got.append(srv.recv(4096).decode())
    finally:
        srv.close()
    ready = next(m for m in got if "READY=1" in m)
    assert "STATUS=" in ready


def test_environment_overrides_host_id_and_key(workdir: Path) -> None:
    (workdir / "keys").rename(workdir / "elsewhere")
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"], metrics=False).replace(
        "[agent]\n", '[agent]\nhost_id = "from-file"\nkey = "keys/missing.key"\n'))
    env = {"HOSTSTAMP_HOST_ID": "from-env", "HOSTSTAMP_KEY": "elsewhere/host.key"}
    res = run_cli(["run", "--once", "--config", str(cfg)], cwd=workdir, env=env, timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    events = [orjson.loads(line) for line in (workdir / "out" / "a.ndjson").read_bytes().splitlines()]
    assert events and {e["hostid"] for e in events} == {"from-env"}
    assert all(e["source"].startswith("hoststamp://from-env/") for e in events)
    # without the overrides the file's key is used, and it does not exist
    res = run_cli(["run", "--once", "--config", str(cfg)], cwd=workdir,
                  env={"HOSTSTAMP_HOST_ID": "", "HOSTSTAMP_KEY": ""}, timeout=30)
    assert res.returncode == 2 and b"keys/missing.key" in res.stderr


def test_metrics_port_in_use_is_a_clear_failure(workdir: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"], metrics=False) + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    try:
        res = run_cli(["run", "--config", str(cfg)], cwd=workdir, timeout=30)
    finally:
        busy.close()
    assert res.returncode == 1
    assert f"127.0.0.1:{port}" in res.stderr.decode() and b"Traceback" not in res.stderr


def _guest_events(n: int, start: int = 0) -> bytes:
    return b"".join(
        orjson.dumps({"specversion": "1.0", "id": f"g{i}", "source": "guest://vm1/app", "type": "com.example.t",
                      "data": {"i": i}}) + b"\n"
        for i in range(start, start + n)
    )


@pytest.mark.parametrize("signing", ["", "sign_threads = 1\n", "sign_workers = 1\n"],
                         ids=["in-loop", "threads", "workers"])
def test_listeners_are_rebuilt_on_sighup(workdir: Path, signing: str) -> None:
    """Whichever way guest events are signed, a reload puts what came before it into the old sinks."""
    if signing.startswith("sign_threads"):
        from agent import _native

        if _native.Signer is None:
            pytest.skip("the native signer is not built here")
    cfg = workdir / "hoststamp.toml"
    listener = '[[listeners]]\nuri = "unix:in.sock"\n'

    def config_text(sinks: list[str], **kw: Any) -> str:
        return _config_text(sinks, **kw).replace("[agent]\n", "[agent]\n" + signing, 1)

    cfg.write_text(config_text(["file:out/a.ndjson"], extra=listener, interval=60))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: (workdir / "in.sock").exists(), what="the listener's socket")
        sent = run_cli(["send", "--to", "unix:in.sock", "--timeout", "10"], cwd=workdir, stdin=_guest_events(3))
        assert sent.returncode == 0, sent.stderr.decode()
        cfg.write_text(config_text(["file:out/b.ndjson"], extra=listener.replace("in.sock", "in2.sock"),
                                   interval=60))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["generation"] == 2, what="the reload")
        assert (workdir / "in2.sock").exists() and not (workdir / "in.sock").exists()
        sent = run_cli(["send", "--to", "unix:in2.sock", "--timeout", "10"], cwd=workdir, stdin=_guest_events(4, 3))
        assert sent.returncode == 0, sent.stderr.decode()
        wait_for(lambda: [(li["uri"], li["accepted"]) for li in agent.status()["listeners"]] == [("unix:in2.sock", 4)],
                 what="the new listener's counts in the status file")
        text = agent.scrape()
        assert metric(text, "hoststamp_receiver_events_accepted_total", listener="unix:in2.sock") == 4
        assert metric(text, "hoststamp_receiver_events_accepted_total", listener="unix:in.sock") is None
        assert agent.stop() == 0

    def guest_ids(path: Path) -> list[str]:
        return [e["id"] for e in map(orjson.loads, path.read_bytes().splitlines()) if e["source"].startswith("guest")]

    assert guest_ids(workdir / "out" / "a.ndjson") == ["g0", "g1", "g2"]
    assert guest_ids(workdir / "out" / "b.ndjson") == ["g3", "g4", "g5", "g6"]


def test_a_listener_kept_across_a_reload_keeps_its_duplicate_window(workdir: Path) -> None:
    """A guest that sends again what it sent before a reload (its acks were lost) is recognized: not taken twice."""
    cfg = workdir / "hoststamp.toml"
    listener = '[[listeners]]\nuri = "unix:in.sock"\n'
    cfg.write_text(_config_text(["file:out/a.ndjson"], extra=listener, interval=60))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: (workdir / "in.sock").exists(), what="the listener's socket")
        assert run_cli(["send", "--to", "unix:in.sock", "--timeout", "10"], cwd=workdir,
                       stdin=_guest_events(3)).returncode == 0
        cfg.write_text(_config_text(["file:out/a.ndjson"], extra=listener, interval=61))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["generation"] == 2, what="the reload")
        assert run_cli(["send", "--to", "unix:in.sock", "--timeout", "10"], cwd=workdir,
                       stdin=_guest_events(4)).returncode == 0
        wait_for(lambda: agent.status()["listeners"][0]["accepted"] == 4, what="the new event taken")
        assert agent.status()["listeners"][0]["duplicates"] == 3
        assert agent.stop() == 0
    ids = [e["id"] for e in map(orjson.loads, (workdir / "out" / "a.ndjson").read_bytes().splitlines())
           if e["source"].startswith("guest")]
    assert ids == ["g0", "g1", "g2", "g3"]


def test_a_sink_kept_across_reloads_sees_its_events_in_order(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    a = workdir / "out" / "a.ndjson"
    cfg.write_text(config_text(["file:out/a.ndjson"], interval=0.1))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        for gen in (2, 3, 4):
            seen = len(sequences(a))
            wait_for(lambda seen=seen: len(sequences(a)) >= seen + 8, what="more events")
            cfg.write_text(config_text(["file:out/a.ndjson"], interval=0.1 + gen / 100))
            agent.signal(signal.SIGHUP)
            wait_for(lambda gen=gen: agent.status()["generation"] == gen, what=f"generation {gen}")
        seen = len(sequences(a))
        wait_for(lambda: len(sequences(a)) >= seen + 8, what="events after the last reload")
        written = len(sequences(a))
        text = agent.scrape()
        # counters of the one URI continue over the queues of four generations
        assert (metric(text, "hoststamp_sink_events_enqueued_total", sink="file:out/a.ndjson") or 0) >= written
        assert agent.stop() == 0
    assert _contiguous(sequences(a))


def test_a_config_that_parses_but_cannot_be_built_is_refused_too(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    a = workdir / "out" / "a.ndjson"
    spooled = '[[sinks]]\nuri = "file:out/a.ndjson"\nspool = "spool/a"\n'
    cfg.write_text(config_text([]) + spooled)
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: len(sequences(a)) >= 8, what="events through the spooled sink")
        # `file:` without a path loads as configuration, but no sink can be built from it
        cfg.write_text(config_text(["file:"]) + spooled)
        agent.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in agent.log(), what="the reload failure")
        assert "needs a path" in agent.log()
        seen = len(sequences(a))
        wait_for(lambda: len(sequences(a)) >= seen + 8, what="events still flowing through the old sink")
        assert agent.status()["generation"] == 1
        assert agent.stop() == 0
    assert _contiguous(sequences(a))
    assert "Traceback" not in agent.log()


def test_a_listener_that_cannot_listen_at_start_is_a_clear_failure(workdir: Path) -> None:
    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"], metrics=False,
                               extra='[[listeners]]\nuri = "unix:no/such/dir/in.sock"\n'))
    res = run_cli(["run", "--config", str(cfg)], cwd=workdir, timeout=30)
    assert res.returncode == 2  # its directory missing: bad configuration
    err = res.stderr.decode()
    assert f"{cfg}: listeners[0].uri: cannot listen at no/such/dir/in.sock" in err and "Traceback" not in err


def test_sighup_moves_the_metrics_endpoint(workdir: Path) -> None:
    import urllib.error
    import urllib.request

    cfg = workdir / "hoststamp.toml"
    cfg.write_text(config_text(["file:out/a.ndjson"]))
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        first = agent.metrics_url()
        assert metric(agent.scrape(), "hoststamp_config_generation") == 1.0
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        cfg.write_text(config_text(["file:out/a.ndjson"]).replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["metrics"] == f"http://127.0.0.1:{port}/metrics", what="the new address")
        assert metric(agent.scrape(), "hoststamp_config_generation") == 2.0
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(first, timeout=5)
        # back to "no metrics": the endpoint goes away, the agent goes on
        cfg.write_text(config_text(["file:out/a.ndjson"], metrics=False))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: agent.status()["generation"] == 3 and agent.status()["metrics"] is None, what="no metrics")
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert agent.stop() == 0


def test_a_second_sigterm_while_draining_exits_at_once(workdir: Path) -> None:
    """The first SIGTERM drains (here for up to a minute: a socket sink that nobody listens to holds events);
    a second one ends the agent now, with exit 1 and a log line that says what that means."""
    cfg = workdir / "hoststamp.toml"
    text = config_text([f"unix:{workdir / 'nobody.sock'}"]).replace("drain_timeout = 5.0", "drain_timeout = 60.0")
    cfg.write_text(text)
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: (agent.status()["sinks"][0]["enqueued"] or 0) > 0, what="events for the dead sink")
        agent.signal(signal.SIGTERM)
        wait_for(lambda: "received SIGTERM, stopping" in agent.log(), what="the first SIGTERM taken")
        time.sleep(SAME_SIGNAL + 0.2)  # a second one at once would be the same request sent twice
        assert agent.proc.poll() is None  # draining
        agent.signal(signal.SIGTERM)
        assert agent.proc.wait(20) == 1
        assert "again while stopping: exiting now" in agent.log()


def test_a_reload_that_would_strand_spooled_events_fails_and_keeps_the_spool(workdir: Path) -> None:
    """The sink's downstream is down, so its spool holds events already acknowledged upstream. A configuration
    without that spool (removed, or moved) would leave them there for good: the reload fails, says why, and the
    running configuration keeps the spool."""
    cfg = workdir / "hoststamp.toml"
    down = workdir / "down.sock"
    spooled = config_text([f"unix:{down}"], sink_keys='spool = "spool"\nbackoff_max = 0.2\n')
    cfg.write_text(spooled)
    with AgentProcess(workdir, cfg) as agent:
        agent.wait_ready()
        wait_for(lambda: (agent.status()["sinks"][0]["enqueued"] or 0) > 3, what="events in the spool")
        cfg.write_text(config_text([f"unix:{down}"], sink_keys="backoff_max = 0.2\n"))
        agent.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in agent.log(), what="the reload refused")
        assert "its spool" in agent.log() and "no sink of the new configuration reads" in agent.log()
        assert agent.proc.poll() is None
        assert agent.stop() == 0


def test_reloads_while_the_sink_is_down_lose_none_of_its_events(workdir: Path) -> None:
    """No spool, the downstream down across two reloads: what the old sink held (taken, never acknowledged)
    and what its queue still held are handed to the reloaded sink, so the downstream, once up, gets every
    event of the probe's sequence (the ids carry it), none missing."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    cfg = workdir / "a.toml"
    b_sock = workdir / "b.sock"
    cfg.write_text(config_text([f"unix:{b_sock}"], sink_keys="backoff_max = 0.2\n")
                   .replace("drain_timeout = 5.0", "drain_timeout = 1.0"))
    b_out = workdir / "b.ndjson"
    with AgentProcess(workdir, cfg) as a:
        a.wait_ready()
        for n in (1, 2):
            seen = len(a.log())
            wait_for(lambda: (a.status()["sinks"][0]["enqueued"] or 0) > 5, what="events for the down sink")
            a.signal(signal.SIGHUP)
            wait_for(lambda n=n, seen=seen: f"generation {n} -> {n + 1}" in a.log()
                     and "handed to the reloaded sink" in a.log()[seen:], what=f"reload {n} handing events on")
        b = subprocess.Popen([sys.executable, "-m", "agent", "run", "--probes", "none", "--listen", f"unix:{b_sock}",
                              "--sink", f"file:{b_out}", "--key", "keys/host.key"],
                             cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.DEVNULL, stderr=(workdir / "b.log").open("wb"))
        try:
            wait_for(lambda: b_out.exists() and len(b_out.read_bytes().splitlines()) > 20, what="events at B")
            assert a.stop() == 0
            # what was handed on and sent again is counted as sent once
            final = a.status()["sinks"][0]
            assert 0 < final["sent"] <= final["enqueued"], final
        finally:
            b.terminate()
            b.wait(20)
    numbers: dict[str, list[int]] = {}
    for line in b_out.read_bytes().splitlines():
        prefix, _, n = orjson.loads(line)["id"].rpartition("-")
        numbers.setdefault(prefix, []).append(int(n))
    assert numbers and all(sorted(set(ns)) == list(range(1, max(ns) + 1)) for ns in numbers.values()), numbers


def _down_sink_config(workdir: Path, drain_timeout: float, extra: str = "") -> Path:
    """The cgroup probe into a ``unix:`` sink nobody listens on (and ``extra``), with this drain_timeout."""
    cfg = workdir / "a.toml"
    cfg.write_text(config_text([f"unix:{workdir / 'nobody.sock'}"], sink_keys="backoff_max = 0.2\n", extra=extra)
                   .replace("drain_timeout = 5.0", f"drain_timeout = {drain_timeout}"))
    return cfg


def _events_for_the_down_sink(a: AgentProcess) -> None:
    a.wait_ready()
    wait_for(lambda: (a.status()["sinks"][0]["enqueued"] or 0) > 5, what="events for the down sink")


def test_sigterm_during_a_reload_stops_what_the_reload_started_at_once(workdir: Path) -> None:
    """A reload waits for its old sinks to drain (here a socket sink that is down). A SIGTERM meanwhile ends
    it by the shutdown's deadline: the new probes stop producing then, not once the reload would be done, and
    the reload is not reported done."""
    out = workdir / "out.ndjson"
    cfg = _down_sink_config(workdir, 6.0, f'[[sinks]]\nuri = "file:{out}"\n')
    with AgentProcess(workdir, cfg) as a:
        _events_for_the_down_sink(a)
        a.signal(signal.SIGHUP)
        wait_for(lambda: "generation 1 -> 2" in a.log(), what="the reload under way")
        stopped_at = time.time()
        assert a.stop() == 0
        log = a.log()
    assert "cut short: the agent is stopping" in log
    assert "reloaded: probes=" not in log
    # the file sink took every event made; none was received after the stop was asked for (a round of the
    # probe every 0.2 s would otherwise add events for as long as the old sink's drain lasts, 6 s; the margin
    # is for a loaded machine, on which a round that fell due just before the stop may run late)
    from datetime import datetime

    last = max(datetime.fromisoformat(orjson.loads(line)["hostreceivedat"].replace("Z", "+00:00")).timestamp()
               for line in out.read_bytes().splitlines())
    assert last <= stopped_at + 2.5, (last, stopped_at)


def test_sigusr1_and_sigusr2_are_logged_and_ignored(workdir: Path) -> None:
    cfg = workdir / "a.toml"
    cfg.write_text(config_text(["file:out.ndjson"]))
    with AgentProcess(workdir, cfg) as a:
        a.wait_ready()
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            a.signal(sig)
            wait_for(lambda sig=sig: f"received {sig.name}, which means nothing" in a.log(), what=f"{sig.name}")
        assert a.proc.poll() is None
        assert a.stop() == 0


def test_a_reload_keeps_the_counters_last_values_so_deltas_go_on(workdir: Path) -> None:
    """An OOM kill just before a reload shows in the first reading after it (a reload is no first sight, so
    ``deltas`` is not null there and the kill is not lost between two baselines)."""
    import shutil

    from tests.ops.agentproc import FIXTURE_CGROUP

    tree = workdir / "cgroup"
    shutil.copytree(FIXTURE_CGROUP, tree)
    cfg = workdir / "a.toml"
    out = workdir / "out.ndjson"
    cfg.write_text(config_text([f"file:{out}"], interval=3600).replace(str(FIXTURE_CGROUP), str(tree)))
    subject = "/system.slice/nginx.service"

    def readings() -> list[dict[str, Any]]:
        return [e["data"]["output"] for e in map(orjson.loads, out.read_bytes().splitlines())
                if e.get("subject") == subject and e["type"].endswith(".cgroup")]

    with AgentProcess(workdir, cfg) as a:
        a.wait_ready()
        wait_for(lambda: len(readings()) == 1, what="the first round")
        events = tree / "system.slice/nginx.service/memory.events"
        events.write_text(events.read_text().replace("oom_kill 2", "oom_kill 3"))
        a.signal(signal.SIGHUP)
        wait_for(lambda: len(readings()) == 2, what="the round of the reloaded probe")
        assert a.stop() == 0
    first, second = readings()
    assert first["deltas"] is None
    assert second["deltas"] is not None and second["deltas"]["memory_events"]["oom_kill"] == 1


@pytest.mark.parametrize("change", [False, True], ids=["same options", "another window"])
def test_exits_around_reloads_are_all_seen(workdir: Path, change: bool) -> None:
    """The exit stream goes on across a reload (it is handed to the reloaded probe, also when options other
    than the stream's own change), so a process that exits between the old watch's end and the new one's start
    is still reported."""
    import shutil
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("the exit stream needs CAP_NET_ADMIN")
    exe = workdir / "hsexit"
    shutil.copy("/bin/true", exe)
    cfg = workdir / "a.toml"
    out = workdir / "out.ndjson"
    cfg.write_text(config_text([f"file:{out}"]).replace(
        "[probes.taskstats]\nenabled = false\n",
        '[probes.taskstats]\ninterval = 3600\npids = [1]\ncommands = ["hsexit"]\nexits = true\n'))
    pids: list[int] = []

    def run_one() -> None:
        proc = subprocess.Popen([str(exe)])
        proc.wait()
        pids.append(proc.pid)

    def exits() -> set[int]:
        return {int(e["subject"]) for e in map(orjson.loads, out.read_bytes().splitlines())
                if e["type"].endswith(".taskstats.exit") and "exit_code" in e["data"]["output"]}

    with AgentProcess(workdir, cfg) as a:
        a.wait_ready()
        for n in range(1, 4):
            if change:
                text = cfg.read_text()
                cfg.write_text(text.replace("window = 64\n", "") if "window = 64" in text else
                               text.replace("exits = true\n", "exits = true\nwindow = 64\n"))
            a.signal(signal.SIGHUP)
            # processes end one after another all through the reload, the switch of the probes included
            while "reloaded" not in a.log().partition(f"generation {n} -> {n + 1}")[2]:
                run_one()
            for _ in range(20):
                run_one()
        wait_for(lambda: set(pids) <= exits(), timeout=20, what="every exit reported")
        assert a.stop() == 0
    assert len(pids) > 60


def test_signals_while_the_agent_starts_are_ignored_not_fatal() -> None:
    """Before the agent handles its signals, SIGHUP, SIGUSR1 and SIGUSR2 are ignored (their default ends the
    process); a child forked meanwhile starts with the defaults."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = (
        "import os, signal\n"
        "from agent.signals import ignore_until_handled\n"
        "ignore_until_handled()\n"
        "for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):\n"
        "    os.kill(os.getpid(), sig)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL else 3)\n"
        "print('alive', os.waitpid(pid, 0)[1])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 0 and res.stdout.strip() == b"alive 0", res


_EARLY_STOP = (
    "import logging, os, signal, sys, time\n"
    "import anyio\n"
    "from agent.signals import SAME_SIGNAL, handle_signals, ignore_until_handled\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
    "ignore_until_handled(note_stops=True)\n"
    "os.kill(os.getpid(), signal.SIGTERM)\n"
    "os.kill(os.getpid(), signal.SIGTERM)  # the same request twice at once (GNU timeout sends two)\n"
    "if sys.argv[1] == 'again':\n"
    "    time.sleep(SAME_SIGNAL + 0.1)\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "print('still starting', flush=True)\n"
    "async def main():\n"
    "    stop = anyio.Event()\n"
    "    async with anyio.create_task_group() as tg:\n"
    "        await tg.start(lambda task_status: handle_signals(stop, lambda: None, task_status=task_status))\n"
    "        with anyio.fail_after(10):\n"
    "            await stop.wait()\n"
    "        tg.cancel_scope.cancel()\n"
    "    print('stopped')\n"
    "anyio.run(main)\n"
)


def test_a_stop_asked_for_while_the_agent_starts_is_taken_once_it_handles_signals() -> None:
    """A SIGTERM before the agent handles its signals does not end it by default (exit 143, nothing said): it
    stops once it is up, the usual way."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    res = subprocess.run([sys.executable, "-c", _EARLY_STOP, "once"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 0, res
    assert res.stdout.decode().splitlines() == [
        "still starting", "received SIGTERM while starting, stopping (again to exit at once)", "stopped"]


def test_a_second_stop_while_the_agent_starts_exits_at_once() -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    res = subprocess.run([sys.executable, "-c", _EARLY_STOP, "again"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 1 and res.stderr == b"", res
    assert res.stdout == b"received SIGINT again while starting: exiting now\n"  # by the log, in its format


def test_a_sigterm_as_the_agent_starts_stops_it_cleanly(workdir: Path) -> None:
    """The agent's first words (a warning of its configuration) come before it handles its signals: a SIGTERM
    sent on them is taken all the same."""
    cfg = workdir / "a.toml"
    cfg.write_text(config_text(["file:out.ndjson"], extra=(
        f'[[listeners]]\nuri = "unix:{workdir / "in.sock"}"\nguest_signatures = "off"\n'
        'trusted_keys = ["keys/host.pub"]\n')))
    with AgentProcess(workdir, cfg) as a:
        wait_for(lambda: "trusted_keys: not used" in a.log(), what="the warning")
        a.signal(signal.SIGTERM)
        assert a.stop() == 0, a.log()
    assert "received SIGTERM" in a.log() and "stopping" in a.log()


def test_a_sighup_while_stopping_reloads_nothing_and_says_so(workdir: Path) -> None:
    with AgentProcess(workdir, _down_sink_config(workdir, 3.0)) as a:
        _events_for_the_down_sink(a)
        a.signal(signal.SIGTERM)
        # the whole line: this test's own directory, in the log's socket paths, holds "stopping" too
        wait_for(lambda: "received SIGTERM, stopping" in a.log(), what="the SIGTERM taken")
        a.signal(signal.SIGHUP)
        wait_for(lambda: "received SIGHUP while stopping: nothing is reloaded" in a.log(), what="the SIGHUP said")
        assert a.stop() == 0
    assert "reloading" not in a.log()

