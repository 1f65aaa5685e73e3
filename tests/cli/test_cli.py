"""The command line, end to end, in subprocesses: what users and CI see."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from cloudevents.core.formats.json import JSONFormat
from cryptography.hazmat.primitives import serialization

from tests.helpers import run_cli

FIXTURE_CGROUP = Path(__file__).resolve().parent.parent / "fixtures" / "hosts"


def _config(tmp: Path, body: str) -> Path:
    p = tmp / "hoststamp.toml"
    p.write_text(body)
    return p


def _fixture_root() -> Path:
    # any committed cgroup v2 fixture tree with leaves
    for cand in sorted(FIXTURE_CGROUP.glob("*/sys/fs/cgroup")):
        if any(cand.rglob("cpu.stat")):
            return cand
    pytest.skip("no cgroup fixture tree")


def test_keys_generate(tmp_path: Path) -> None:
    res = run_cli(["keys", "generate", "--dir", "k"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    key, pub = tmp_path / "k" / "host.key", tmp_path / "k" / "host.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in key.read_bytes() and b"BEGIN PUBLIC KEY" in pub.read_bytes()
    raw = serialization.load_pem_public_key(pub.read_bytes()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert res.stdout.decode().strip() == hashlib.sha256(raw).hexdigest()
    again = run_cli(["keys", "generate", "--dir", "k"], cwd=tmp_path)
    assert again.returncode != 0 and b"already exists" in again.stderr


def test_keys_generate_sets_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert run_cli(["keys", "generate", "--dir", "k/deeper"], cwd=tmp_path).returncode == 0
    finally:
        os.umask(old)
    d = tmp_path / "k" / "deeper"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "host.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "host.pub").stat().st_mode) == 0o644


def test_keys_that_cannot_be_written_are_a_runtime_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    res = run_cli(["keys", "generate", "--dir", "file/keys"], cwd=tmp_path)
    assert res.returncode == 1 and b"cannot write keys" in res.stderr


@pytest.mark.parametrize(("args", "config", "key"), [
    (["--sink", "stdout:foo"], "", "--sink"),
    (["--sink", "file:"], "", "--sink"),
    ([], '[[sinks]]\nuri = "stdout:"\n[[sinks]]\nuri = "archive:"\n', "sinks[1].uri"),
])
def test_a_sink_target_it_cannot_take_is_a_config_error_naming_where_it_came_from(
        tmp_path: Path, args: list[str], config: str, key: str) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, config)
    res = run_cli(["run", "--once", "--probes", "none", "--config", str(cfg), *args], cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    where = f"{cfg}: {key}" if key.startswith("sinks[") else key  # a key of the file comes with the file's name
    assert f"configuration error: {where}:".encode() in res.stderr


def test_a_missing_key_says_how_to_make_one(tmp_path: Path) -> None:
    res = run_cli(["run", "--once", "--probes", "none", "--sink", "stdout:"], cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.decode()
    assert "keys/host.key" in err and "hoststamp keys generate --dir keys" in err


@pytest.mark.parametrize(("mode", "said"), [(0o640, "readable"), (0o604, "readable"), (0o644, "readable"),
                                           (0o620, "open"), (0o601, "open")])
def test_group_or_other_readable_key_is_refused(tmp_path: Path, mode: int, said: str) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    key = tmp_path / "keys" / "host.key"
    os.chmod(key, mode)
    res = run_cli(["run", "--once", "--probes", "none", "--sink", "stdout:"], cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.decode()
    assert "keys/host.key" in err and "chmod 600" in err
    assert f"private key is {said} to group or others (mode {mode:04o})" in err


def test_the_wrong_kind_of_key_file_is_named_before_its_mode(tmp_path: Path) -> None:
    """A public key or a directory given as the host key is said to be one, not advised to be chmodded; a private
    key given to ``verify`` as a public one is refused (a trust store refuses it too)."""
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    for given, said in (("keys/host.pub", "keys/host.pub: a public key; the host key is the private one"),
                        ("keys", "keys: cannot read private key: not a file")):
        res = run_cli(["run", "--once", "--probes", "none", "--sink", "stdout:", "--key", given], cwd=tmp_path)
        assert res.returncode == 2 and said in res.stderr.decode()
        assert "chmod" not in res.stderr.decode()
    (tmp_path / "ev.ndjson").write_bytes(b"")
    for flag in ("--pub", "--guest-pub"):
        res = run_cli(["verify", flag, "keys/host.key", "ev.ndjson"], cwd=tmp_path)
        assert res.returncode == 2
        assert f"keys/host.key: a private key; {flag} takes public keys only" in res.stderr.decode()


def test_a_state_directory_that_cannot_be_made_is_named_as_such(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    (tmp_path / "afile").write_text("in the way")
    cfg = _config(tmp_path, '[agent]\nstate_dir = "afile/state"\n')
    for args in (["run", "--config", str(cfg), "--once", "--probes", "none", "--sink", "stdout:"],
                 ["probe", "link", "--config", str(cfg)]):
        res = run_cli(args, cwd=tmp_path)
        err = res.stderr.decode()
        assert res.returncode == 2, err
        assert "agent.state_dir" in err and "cannot use the state directory afile/state" in err and str(cfg) in err


def test_version_and_the_logging_options_after_the_verb(tmp_path: Path) -> None:
    from agent import __version__

    res = run_cli(["--version"], cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.decode().strip() == f"hoststamp {__version__}"
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    for args in (["--log-format", "json", "run"], ["run", "--log-format", "json", "-v"]):
        res = run_cli([*args, "--once", "--probes", "none", "--sink", "file:ev.ndjson"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr.decode()
        logged = [orjson.loads(line) for line in res.stderr.splitlines()]
        assert logged and all("msg" in rec for rec in logged)


def test_a_spool_where_a_file_is_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    (tmp_path / "afile").write_text("in the way")
    cfg = _config(tmp_path, '[[sinks]]\nuri = "file:out.ndjson"\nspool = "afile"\n')
    res = run_cli(["run", "--config", str(cfg), "--once", "--probes", "none"], cwd=tmp_path)
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert f"{cfg}: sinks[0].spool: spool afile: not a directory" in err


def test_run_once_emits_verifiable_cloudevents(tmp_path: Path) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "file:out/events.ndjson"\n')
    res = run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "out" / "events.ndjson").read_bytes().splitlines()
    assert lines
    fmt = JSONFormat()
    for line in lines:
        ce = fmt.read(None, line)  # the official SDK parses every event
        attrs = ce.get_attributes()
        assert attrs["type"] == "io.hoststamp.host.v1.cgroup"
        assert attrs["specversion"] == "1.0"
        doc = orjson.loads(line)
        assert set(doc["data"]) >= {"probeSource", "inputs", "output"}
        assert doc["signedextattrs"] == "hostid,hostreceivedat,sequence"
    ver = run_cli(["verify", "out/events.ndjson"], cwd=tmp_path)
    assert ver.returncode == 0, ver.stdout + ver.stderr
    assert b"OK:" in ver.stdout


def test_run_once_says_it_does_not_start_listeners(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    sock = tmp_path / "in.sock"
    res = run_cli(["run", "--once", "--probes", "none", "--sink", "file:out.ndjson", "--listen", f"unix:{sock}"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"--once: one round of the probes only; the listeners (unix:{sock}) are not started" in res.stderr.decode()
    assert not sock.exists()


@pytest.mark.parametrize("sink", ["file:/proc/no-such-dir/events.ndjson", "unix:{tmp}/nobody-listens.sock"])
def test_run_once_fails_when_a_sink_did_not_get_every_event(tmp_path: Path, sink: str) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[agent]\ndrain_timeout = 0.5\n[probes.cgroup]\nroot = "{root}"\n'
                            f'[[sinks]]\nuri = "file:ok.ndjson"\n')
    res = run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup", "--sink", sink.format(tmp=tmp_path)],
                  cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert b"not delivered" in res.stderr
    assert (tmp_path / "ok.ndjson").read_bytes()  # the sink that works got the events all the same
    assert run_cli(["verify", "ok.ndjson"], cwd=tmp_path).returncode == 0


def test_run_once_counts_what_a_spool_keeps_once(tmp_path: Path) -> None:
    """A spooled sink that took the events but had none confirmed (its downstream takes the connection, never
    acks): each event is counted once, kept in the spool, not again as taken unconfirmed."""
    import socket

    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen(8)  # connections wait in the backlog: the frames go into the socket, no ack ever comes
    try:
        cfg = _config(tmp_path, f'[agent]\ndrain_timeout = 1.0\n[probes.cgroup]\nroot = "{root}"\n'
                                f'[[sinks]]\nuri = "file:ok.ndjson"\n'
                                f'[[sinks]]\nuri = "unix:{tmp_path / "mute.sock"}"\nspool = "spool"\n')
        res = run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path)
    finally:
        mute.close()
    made = len((tmp_path / "ok.ndjson").read_bytes().splitlines())
    assert made > 1 and res.returncode == 1, res.stderr
    assert f"--once: {made} events not delivered to every sink".encode() in res.stderr, res.stderr
    assert f"spooled={made}".encode() in res.stderr, res.stderr


def test_run_once_fails_when_a_queue_dropped_events(tmp_path: Path) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "file:all.ndjson"\n'
                            '[[sinks]]\nuri = "file:one.ndjson"\nqueue_size = 1\noverflow = "drop_newest"\n')
    res = run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path)
    every = (tmp_path / "all.ndjson").read_bytes().splitlines()
    assert len(every) > 1 and len((tmp_path / "one.ndjson").read_bytes().splitlines()) < len(every)
    assert res.returncode == 1 and b"not delivered" in res.stderr, res.stderr
    # with JSON logs every line on stderr is JSON, the start and the verdict included
    res = run_cli(["--log-format", "json", "run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path)
    records = [orjson.loads(line) for line in res.stderr.splitlines()]
    assert res.returncode == 1 and records[0]["msg"].startswith("running; probes=cgroup")
    assert any("not delivered" in r["msg"] for r in records)


def test_sequence_rises_across_restarts(tmp_path: Path) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "file:ev.ndjson"\n')
    for _ in range(3):
        assert run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path).returncode == 0
    seqs = [int(orjson.loads(line)["sequence"]) for line in (tmp_path / "ev.ndjson").read_bytes().splitlines()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert run_cli(["verify", "ev.ndjson"], cwd=tmp_path).returncode == 0


def test_verify_reports_each_problem_and_exits_1(tmp_path: Path) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "file:ev.ndjson"\n')
    assert run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path).returncode == 0
    lines = (tmp_path / "ev.ndjson").read_bytes().splitlines()
    doc = orjson.loads(lines[0])
    doc["subject"] = "/forged"
    bad = [orjson.dumps(doc), b"{not json", *lines[1:]]
    (tmp_path / "bad.ndjson").write_bytes(b"\n".join(bad) + b"\n")
    res = run_cli(["verify", "bad.ndjson"], cwd=tmp_path)
    assert res.returncode == 1
    out = res.stdout.decode().splitlines()
    assert any("bad.ndjson:1" in line and "modified" in line for line in out)
    assert any("bad.ndjson:2" in line and "not JSON" in line for line in out)
    assert out[-1].startswith("FAILED:")
    # stdin works the same, and --json is machine-readable
    res2 = run_cli(["verify", "--json", "-"], cwd=tmp_path, stdin=b"\n".join(bad))
    assert res2.returncode == 1 and len(orjson.loads(res2.stdout)["problems"]) == 2


def test_verify_into_a_closed_pipe_still_exits_with_its_verdict(tmp_path: Path) -> None:
    """``hoststamp verify ... | head`` under ``pipefail``: a reader that went away does not turn problems into 0."""
    from tests.helpers import ROOT

    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    assert run_cli(["run", "--once", "--probes", "mounts", "--sink", "file:ev.ndjson"], cwd=tmp_path).returncode == 0
    assert (tmp_path / "ev.ndjson").stat().st_size > 0
    good = (tmp_path / "ev.ndjson").read_bytes()
    (tmp_path / "bad.ndjson").write_bytes(good + b"{not json\n" * 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    codes = {}
    for name in ("ev.ndjson", "bad.ndjson"):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written
        try:
            proc = subprocess.run([sys.executable, "-m", "agent", "verify", name], cwd=tmp_path, env=env,
                                  stdout=write, stderr=subprocess.PIPE, timeout=60, check=False)
        finally:
            os.close(write)
        assert b"Traceback" not in proc.stderr
        codes[name] = proc.returncode
    assert codes == {"ev.ndjson": 0, "bad.ndjson": 1}


def test_verify_reads_a_gzip_file_through_and_reports_damage_in_it(tmp_path: Path) -> None:
    """A closed archive segment (``seg-N.ndjson.gz``) or a rotated log verifies as the lines it holds."""
    import gzip

    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "file:ev.ndjson"\n')
    assert run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path).returncode == 0
    plain = (tmp_path / "ev.ndjson").read_bytes()
    packed = gzip.compress(plain)
    (tmp_path / "ev.ndjson.gz").write_bytes(packed)
    lines = plain.count(b"\n")
    res = run_cli(["verify", "ev.ndjson.gz"], cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.decode().splitlines()[-1].startswith(f"OK: {lines} events"), (
        res.stdout + res.stderr)
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    res = run_cli(["verify", "cut.gz"], cwd=tmp_path)
    assert res.returncode == 1 and b"not readable as gzip after what was read" in res.stdout, res.stdout
    assert b"Traceback" not in res.stderr
    missing = run_cli(["verify", "--proof", "no-such-bundle.json"], cwd=tmp_path)
    assert missing.returncode == 2 and b"cannot read the proof bundle" in missing.stderr


def test_a_configured_key_that_cannot_be_used_names_its_key_and_file(tmp_path: Path) -> None:
    """Bad configuration: exit 2 with the key and the file (the contract), and a hint that makes that key."""
    cfg = _config(tmp_path, '[agent]\nkey = "k/node.key"\n[[sinks]]\nuri = "stdout:"\n')
    res = run_cli(["run", "--once", "--probes", "none", "--config", str(cfg)], cwd=tmp_path)
    err = res.stderr.decode()
    assert res.returncode == 2 and f"{cfg}: agent.key: k/node.key: cannot read private key" in err, err
    assert "hoststamp keys generate --dir k, which writes k/host.key: name that one" in err
    res = run_cli(["probe", "lve", "--config", str(cfg)], cwd=tmp_path, env={"HOSTSTAMP_KEY": "elsewhere.key"})
    assert res.returncode == 2 and b"HOSTSTAMP_KEY: elsewhere.key: cannot read private key" in res.stderr


def test_verify_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli(["verify", "nothing.ndjson", "--pub", "nope.pub"], cwd=tmp_path).returncode == 2
    assert run_cli(["verify", "x.ndjson"], cwd=tmp_path).returncode == 2  # no key at all
    assert run_cli(["verify"], cwd=tmp_path).returncode == 2
    assert run_cli(["frobnicate"], cwd=tmp_path).returncode == 2


def test_verify_with_wrong_key_fails(tmp_path: Path) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    assert run_cli(["keys", "generate", "--dir", "other"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "file:ev.ndjson"\n')
    assert run_cli(["run", "--config", str(cfg), "--once", "--probes", "cgroup"], cwd=tmp_path).returncode == 0
    res = run_cli(["verify", "--pub", "other/host.pub", "ev.ndjson"], cwd=tmp_path)
    assert res.returncode == 1 and b"trusted" in res.stdout


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[agent]\nbogus = 1\n", "agent.bogus"),
        ("[probes.cgroup]\nintervall = 5\n", "probes.cgroup.intervall"),
        ("[probes.nosuch]\n", "probes.nosuch"),
        ('[[sinks]]\nuri = "file:x"\nqueue = 5\n', "sinks[0].queue"),
        ('[[sinks]]\nuri = "bogus:x"\n', "sinks[0].uri"),
        ("[probes.cgroup]\ninterval = \"fast\"\n", "probes.cgroup.interval"),
        ("[metrics]\nlisten = 5\n", "metrics.listen"),
        ("surprise = true\n", "surprise"),
        ("[agent\n", ""),
    ],
)
def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    cfg = _config(tmp_path, body)
    res = run_cli(["run", "--config", str(cfg), "--once"], cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.decode()
    assert str(cfg) in err and key in err
    assert "Traceback" not in err


def test_probe_verb_prints_signed_ndjson(tmp_path: Path) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n')
    res = run_cli(["probe", "cgroup", "--config", str(cfg)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (tmp_path / "p.ndjson").write_bytes(res.stdout)
    assert res.stdout.count(b"\n") >= 1
    assert run_cli(["verify", "p.ndjson"], cwd=tmp_path).returncode == 0
    assert run_cli(["probe", "nosuch"], cwd=tmp_path).returncode == 2


def test_the_probe_verb_numbers_rise_with_the_agents_across_runs(tmp_path: Path) -> None:
    """`hoststamp probe` between two runs: per source, every number is above the first run's and below the
    second's (the contract's strictly increasing sequence), and the archive the runs write verifies: the
    numbers the probe took are a gap between two runs, a note and no problem."""
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "archive:arch"\n')
    outs = []
    for i, verb in enumerate(("run", "probe", "run")):
        args = (["run", "--once", "--probes", "cgroup", "--sink", f"file:out{i}.ndjson"] if verb == "run"
                else ["probe", "cgroup"])
        res = run_cli([*args, "--config", str(cfg)], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        body = res.stdout if verb == "probe" else (tmp_path / f"out{i}.ndjson").read_bytes()
        outs.append(body)
    (tmp_path / "all.ndjson").write_bytes(b"".join(outs))
    assert run_cli(["verify", "all.ndjson"], cwd=tmp_path).returncode == 0  # rising per source throughout
    seqs = [{e["source"]: int(e["sequence"]) for e in map(orjson.loads, o.splitlines())} for o in outs]
    assert seqs[0] and seqs[0].keys() == seqs[1].keys() == seqs[2].keys()
    assert all(seqs[0][s] < seqs[1][s] < seqs[2][s] for s in seqs[0])
    res = run_cli(["verify", "arch"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert b"sequence-gap-between-runs" in res.stdout + res.stderr


def test_help_for_every_verb(tmp_path: Path) -> None:
    for verb in (["run"], ["probe"], ["keys", "generate"], ["verify"], ["send"]):
        res = run_cli([*verb, "--help"], cwd=tmp_path)
        assert res.returncode == 0 and b"usage:" in res.stdout


@pytest.mark.parametrize("value", ["", " , ,"])
def test_an_empty_probe_list_is_a_usage_error_not_a_run_without_probes(tmp_path: Path, value: str) -> None:
    """`--probes "$PROBES"` with the variable unset must not quietly run no probe; 'none' says that."""
    res = run_cli(["run", "--once", "--probes", value, "--sink", "stdout:"], cwd=tmp_path)
    assert res.returncode == 2 and b"no probe named (to run none, say 'none')" in res.stderr


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_send_timeout_must_be_seconds_above_zero(tmp_path: Path, value: str) -> None:
    res = run_cli(["send", "--to", f"unix:{tmp_path}/none.sock", "--timeout", value], cwd=tmp_path, stdin=b"")
    assert res.returncode == 2 and b"expected seconds (a number above 0)" in res.stderr


def _run_with_stdout(args: list[str], cwd: Path, stdout: int | None) -> subprocess.CompletedProcess[bytes]:
    """``python -m agent ARGS`` with fd 1 as given (None: closed)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    close = () if stdout is not None else (1,)
    return subprocess.run([sys.executable, "-c", "import os, sys, runpy\n"
                           + "".join(f"os.close({fd})\n" for fd in close)
                           + "sys.argv = ['hoststamp', *sys.argv[1:]]\nrunpy.run_module('agent', run_name='__main__')",
                           *args], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, timeout=60, env=env, check=False)


@pytest.mark.parametrize("where", ["closed", "/dev/full"])
def test_output_that_cannot_be_written_is_a_clear_failure(tmp_path: Path, where: str) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n')
    with open(os.devnull if where == "closed" else where, "wb") as out:
        res = _run_with_stdout(["probe", "cgroup", "--config", str(cfg)], tmp_path,
                               None if where == "closed" else out.fileno())
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert "Traceback" not in err and "Exception ignored" not in err
    reason = "standard output is closed" if where == "closed" else "No space left on device"
    assert err.strip().splitlines() == [f"hoststamp: cannot write the output (standard output): {reason}"]


def test_a_stdout_sink_on_a_closed_stdout_never_writes_into_a_file_that_took_fd_1(tmp_path: Path) -> None:
    root = _fixture_root()
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    cfg = _config(tmp_path, f'[probes.cgroup]\nroot = "{root}"\n[[sinks]]\nuri = "stdout:"\n'
                            '[[sinks]]\nuri = "file:out.ndjson"\n')
    res = _run_with_stdout(["run", "--once", "--probes", "cgroup", "--config", str(cfg)], tmp_path, None)
    err = res.stderr.decode()
    assert res.returncode == 1 and "standard output was closed when the agent started" in err, err
    lines = (tmp_path / "out.ndjson").read_bytes().splitlines()
    assert lines and all(orjson.loads(x)["type"].startswith("io.hoststamp.") for x in lines)
    assert run_cli(["verify", "out.ndjson"], cwd=tmp_path).returncode == 0


def test_fatal_errors_are_json_where_logs_are(tmp_path: Path) -> None:
    res = run_cli(["--log-format", "json", "run", "--once", "--key", "nosuch.key"], cwd=tmp_path)
    assert res.returncode == 2
    (line,) = res.stderr.decode().splitlines()
    doc = orjson.loads(line)
    assert doc["level"] == "error" and "key error" in doc["msg"] and "nosuch.key" in doc["msg"]


def test_send_with_its_standard_input_closed_says_so(tmp_path: Path) -> None:
    from tests.helpers import ROOT

    res = subprocess.run([sys.executable, "-m", "agent", "send", "--to", f"unix:{tmp_path}/x.sock"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         preexec_fn=lambda: os.close(0), timeout=60, check=False)
    assert res.returncode == 2
    assert b"standard input is closed" in res.stderr and b"Traceback" not in res.stderr


def test_send_that_gives_up_says_from_which_line_the_input_was_not_sent(tmp_path: Path) -> None:
    """Nobody listens and the window (1,000 events) fills: the summary counts what was sent, and says that the
    input from the line after it on was not (a script then knows what to send again)."""
    lines = b"".join(b'{"specversion":"1.0","id":"%d","source":"s","type":"t"}\n' % i for i in range(2500))
    res = run_cli(["send", "--to", f"unix:{tmp_path}/none.sock", "--timeout", "1"], cwd=tmp_path, stdin=lines)
    assert res.returncode == 1
    assert res.stderr.decode().splitlines()[-1] == (
        f"hoststamp send: 0 of 1000 events acknowledged by unix:{tmp_path}/none.sock; the input from line 1001 "
        "on was not sent")


def test_verify_and_config_check_of_a_closed_standard_input_say_so(tmp_path: Path) -> None:
    from tests.helpers import ROOT

    for args in (["verify", "--pub", "x.pub", "-"], ["config", "check", "/dev/stdin"]):
        if args[0] == "verify":
            assert run_cli(["keys", "generate", "--dir", "k"], cwd=tmp_path).returncode == 0
            args[2] = "k/host.pub"
        res = subprocess.run([sys.executable, "-m", "agent", *args], cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                             preexec_fn=lambda: os.close(0), timeout=60, check=False)
        assert res.returncode == 2, res.stderr
        assert b"standard input is closed" in res.stderr and b"Traceback" not in res.stderr


def test_the_logging_options_after_a_verb_of_two_words(tmp_path: Path) -> None:
    cfg = _config(tmp_path, '[[sinks]]\nuri = "stdout:"\n')
    for args in (["config", "check", str(cfg), "--log-format", "json"], ["config", "check", str(cfg), "-v"],
                 ["keys", "generate", "--dir", "k", "-v"]):
        res = run_cli(args, cwd=tmp_path)
        assert res.returncode == 0, (args, res.stderr)


@pytest.mark.parametrize(("to", "reason"), [
    ("BADURI", "not a stream endpoint: 'BADURI' (expected unix:, vsock: or fcvsock:)"),
    ("unix:", "unix: needs a socket path: 'unix:'"),
    ("vsock:any:5000", "vsock:any: is for listening; a client needs a CID: 'vsock:any:5000'"),
])
def test_send_to_a_bad_uri_is_a_usage_error_naming_the_option(tmp_path: Path, to: str, reason: str) -> None:
    res = run_cli(["send", "--to", to], cwd=tmp_path, stdin=b"")
    assert res.returncode == 2
    assert res.stderr.decode().splitlines() == [f"hoststamp send: argument --to: {reason}"]


def test_send_with_a_directory_as_its_standard_input_says_so(tmp_path: Path) -> None:
    """The interpreter itself refuses to start with a directory on fd 0, so the directory is put there once it
    runs (as a program embedding the command would have it)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-c", "import os, sys, runpy\n"
                          f"fd = os.open({str(tmp_path)!r}, os.O_RDONLY)\nos.dup2(fd, 0)\nos.close(fd)\n"
                          "sys.argv = ['hoststamp', *sys.argv[1:]]\nrunpy.run_module('agent', run_name='__main__')",
                          "send", "--to", f"unix:{tmp_path}/x.sock"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=60, env=env, check=False)
    assert res.returncode == 2
    assert res.stderr.decode().splitlines() == [
        "hoststamp send: standard input is a directory; send reads the events to ship from it"]


def test_a_firecracker_listener_that_cannot_listen_names_its_option_and_its_socket_file(tmp_path: Path) -> None:
    """Its directory missing is bad configuration, found before the agent starts, as `config check` finds it."""
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    uri = f"fcvsock:{tmp_path}/nodir/v.sock:52"
    res = run_cli(["run", "--probes", "none", "--sink", "stdout:", "--listen", uri], cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.decode().splitlines()[-1] == (
        f"hoststamp: configuration error: --listen: cannot listen at {tmp_path}/nodir/v.sock_52: directory "
        f"{tmp_path}/nodir does not exist")


@pytest.mark.parametrize(("argv", "said"), [
    (["verify", "a", "b"], b"hoststamp verify: unrecognized arguments: b (see hoststamp verify --help)"),
    (["verify", "--bogus", "x"], b"hoststamp verify: unrecognized arguments: --bogus (see hoststamp verify --help)"),
    (["run", "--once", "--bogus"], b"hoststamp run: unrecognized arguments: --bogus (see hoststamp run --help)"),
    (["keys", "generate", "--dir", "k", "zz"],
     b"hoststamp keys generate: unrecognized arguments: zz (see hoststamp keys generate --help)"),
    (["config", "check", "a", "b"],
     b"hoststamp config check: unrecognized arguments: b (see hoststamp config check --help)"),
])
def test_an_unrecognized_argument_is_named_with_its_verb(tmp_path: Path, argv: list[str], said: bytes) -> None:
    res = run_cli(argv, cwd=tmp_path)
    assert res.returncode == 2 and said in res.stderr, res.stderr
