"""`hoststamp config check`: every problem, each with file, key and reason; environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.configcheck import check_file
from agent.errors import ConfigError
from agent.signing.keys import generate_keypair
from tests.helpers import run_cli

MANY_PROBLEMS = """\
colour = "blue"

[agent]
state_dir = "state"
drain_timeout = "soon"
bogus = 1

[probes.cgroup]
interval = -1

[probes.nope]
interval = 5

[probes.lve]
top_n = "three"
shiny = true

[[sinks]]
uri = "carrier-pigeon:home"

[[sinks]]
uri = "file:out.ndjson"
queue_size = "big"
overflow = "explode"

[[sinks]]
uri = "stdout:x"

[[sinks]]
uri = "file:spooled.ndjson"
spool = "spool"
spool_max_bytes = 100
batch_max = 0
queue_size = -1

sinks_too = [1]

[[listeners]]
uri = "vsock:seven:5000"

[metrics]
listen = "localhost"
"""

EXPECTED_KEYS = {
    "colour", "agent.drain_timeout", "agent.bogus", "probes.cgroup.interval", "probes.nope", "probes.lve.top_n",
    "probes.lve.shiny", "sinks[0].uri", "sinks[1].queue_size", "sinks[1].overflow", "listeners[0].uri",
    "metrics.listen",
    # a target the sink refuses, and every bad common key of one table (checks that name their key)
    "sinks[2].uri", "sinks[3].spool_max_bytes", "sinks[3].batch_max", "sinks[3].queue_size", "sinks[3].sinks_too",
}


def test_every_problem_is_reported_with_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MANY_PROBLEMS)
    problems = check_file(path)
    assert {p.key for p in problems} == EXPECTED_KEYS
    assert all(p.file == str(path) and p.reason and p.severity == "error" for p in problems)
    by_key = {p.key: p.reason for p in problems}
    assert "unknown key" in by_key["agent.bogus"] and "unknown probe" in by_key["probes.nope"]
    assert "explode" in by_key["sinks[1].overflow"] and "HOST:PORT" in by_key["metrics.listen"]
    # the agent itself refuses the file at the first of them
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.key in EXPECTED_KEYS


def test_cli_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MANY_PROBLEMS)
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.decode().splitlines()
    for key in EXPECTED_KEYS:
        assert any(line.startswith(f"{path}: {key}: ") for line in lines), key
    assert lines[-1] == f"{path}: {len(EXPECTED_KEYS)} problems"


def test_not_toml_is_one_problem_with_the_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[agent]\nstate_dir = "x\n')
    problems = check_file(path)
    assert len(problems) == 1 and "line 2" in problems[0].reason
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    assert res.returncode == 2 and b"not valid TOML" in res.stderr
    assert check_file(tmp_path / "absent.toml")[0].reason.startswith("cannot read")


def test_a_good_file_passes_and_warnings_do_not_fail_it(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[probes.cgroup]\ninterval = 5\n[[sinks]]\nuri = "file:a"\n[[sinks]]\nuri = "file:a"\n')
    problems = check_file(path)
    assert [(p.key, p.severity) for p in problems] == [("sinks[1].uri", "warning")]
    res = run_cli(["config", "check", str(path)], cwd=tmp_path)
    assert res.returncode == 0 and b"OK" in res.stdout and b"warning" in res.stderr
    path.write_text("")
    assert [p.key for p in check_file(path)] == ["sinks"]
    assert run_cli(["config", "check", str(path)], cwd=tmp_path).returncode == 0


def test_environment_overrides_the_key_path_and_host_id() -> None:
    doc = {"agent": {"key": "/etc/hoststamp/keys/host.key", "host_id": "from-file"}}
    plain = config.parse(doc, env={})
    assert (plain.agent.key, plain.agent.host_id) == ("/etc/hoststamp/keys/host.key", "from-file")
    env = {config.ENV_KEY: "/run/secrets/host.key", config.ENV_HOST_ID: "node-7"}
    over = config.parse(doc, env=env)
    assert (over.agent.key, over.agent.host_id) == ("/run/secrets/host.key", "node-7")
    # set but empty is the same as unset
    assert config.parse(doc, env={config.ENV_KEY: "", config.ENV_HOST_ID: ""}).agent.host_id == "from-file"
    assert config.ENV_KEY == "HOSTSTAMP_KEY" and config.ENV_HOST_ID == "HOSTSTAMP_HOST_ID"


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:9464", ":9464", "0.0.0.0:0"])
def test_metrics_listen_accepts_host_port(listen: str) -> None:
    assert config.parse({"metrics": {"listen": listen}}, env={}).metrics.listen == listen


@pytest.mark.parametrize("listen", ["9464", "::1:9464", "host:port", "h:70000", "h:", " 127.0.0.1:9464",
                                    "127.0.0.1 :9464", "127.0.0.1:\u0662\u0669\u0664\u0667\u0661", "[x y]:1"])
def test_metrics_listen_rejects_the_rest(listen: str) -> None:
    """What `run` could not bind is refused by the check too (a space, digits of another script)."""
    with pytest.raises(ConfigError, match=r"HOST:PORT|brackets|\]:PORT|out of range") as exc:
        config.parse({"metrics": {"listen": listen}}, env={})
    assert exc.value.key == "metrics.listen"


def test_a_port_out_of_range_is_said_to_be() -> None:
    with pytest.raises(ConfigError, match=r"port 492211 is out of range \(0 to 65535\)") as exc:
        config.parse({"metrics": {"listen": "127.0.0.1:492211"}}, env={})
    assert exc.value.key == "metrics.listen"


def test_every_bad_key_of_a_nested_table_is_listed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[probes.cgroup.watch]\nbogus = 1\ncoalesce = -0.1\nrescan = -1\n'
                   'psi_triggers = ["memory sometimes 1 2"]\n[[sinks]]\nuri = "stdout:"\n')
    keys = [p.key for p in check_file(cfg)]
    assert keys == ["probes.cgroup.watch.bogus", "probes.cgroup.watch.coalesce", "probes.cgroup.watch.psi_triggers",
                    "probes.cgroup.watch.rescan"]


def test_a_private_key_is_no_trusted_key(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "g")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/x.sock"\n'
                   f'guest_signatures = "require"\ntrusted_keys = ["{tmp_path}/g/host.key"]\n')
    (problem,) = check_file(cfg)
    assert problem.key == "listeners[0].trusted_keys" and "a private key" in problem.reason
    cfg.write_text(cfg.read_text().replace("host.key", "host.pub"))
    assert check_file(cfg) == []


def test_metrics_listen_given_as_a_url_says_so() -> None:
    with pytest.raises(ConfigError, match=r"no scheme, no path"):
        config.parse({"metrics": {"listen": "http://127.0.0.1:9464"}}, env={})


@pytest.mark.parametrize(
    ("body", "key", "named"),
    [
        ("[probes.cgroup]\nintervl = 5\n", "probes.cgroup.intervl", ("interval", "enabled", "root")),
        ('[[sinks]]\nuri = "file:x"\nqueue = 5\n', "sinks[0].queue", ("queue_size", "uri", "fsync")),
    ],
)
def test_an_unknown_key_message_lists_the_common_keys_too(body: str, key: str, named: tuple[str, ...]) -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        config.parse(tomllib.loads(body), file="h.toml")
    msg = str(info.value)
    assert msg.startswith(f"h.toml: {key}: unknown key")
    allowed = msg.split("allowed here: ", 1)[1].rstrip(")").split(", ")
    assert set(named) <= set(allowed)


def test_a_sink_flag_naming_a_configured_sink_is_not_added_twice(tmp_path: Path) -> None:
    import tomllib

    cfg = config.parse(tomllib.loads(f'[[sinks]]\nuri = "file:{tmp_path}/ev.ndjson"\n'), file="h.toml")
    more = cfg.with_sinks([f"file:{tmp_path}/./ev.ndjson", "stdout:", "stdout:", f"file:{tmp_path}/other.ndjson"])
    assert [ep.uri for ep in more.sinks] == [f"file:{tmp_path}/ev.ndjson", "stdout:", f"file:{tmp_path}/other.ndjson"]


@pytest.mark.parametrize("uri", ["stdout:", "vsock:abc", "unix:", "vsock:any:notaport", "fcvsock:/x",
                                 "nats://127.0.0.1:4222/x.>?foo=1", "nats://127.0.0.1:4222/x.>?batch=-1",
                                 "nats://127.0.0.1:4222/x.>?ack_wait=nan", "nats://127.0.0.1:4222/x.>?ack_wait=inf"])
def test_a_listener_uri_is_checked_when_the_config_is_read(uri: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        config.parse(tomllib.loads(f'[[listeners]]\nuri = "{uri}"\n'), file="h.toml")
    assert str(info.value).startswith("h.toml: listeners[0].uri: ")
    with pytest.raises(ConfigError) as info:
        config.Config().with_listeners([uri])
    assert str(info.value).startswith("--listen: ")


def test_run_once_refuses_a_bad_listen_uri(tmp_path: Path) -> None:
    assert run_cli(["keys", "generate"], cwd=tmp_path).returncode == 0
    res = run_cli(["run", "--once", "--probes", "none", "--sink", "stdout:", "--listen", "vsock:abc"], cwd=tmp_path)
    assert res.returncode == 2 and b"--listen: expected vsock:CID:PORT" in res.stderr


def test_a_guest_signature_policy_needs_trust_it_can_read(tmp_path: Path) -> None:
    from agent.signing.keys import generate_keypair

    generate_keypair(tmp_path / "guest")
    pub = tmp_path / "guest" / "host.pub"
    (tmp_path / "not-a-key.pub").write_text("hello\n")
    cases = {
        'guest_signatures = "require"\n': ("listeners[0].trusted_keys", "needs trusted_keys"),
        f'guest_signatures = "verify"\ntrusted_keys = ["{tmp_path}/missing.pub"]\n': (
            "listeners[0].trusted_keys", "missing.pub"),
        f'guest_signatures = "verify"\ntrusted_keys = ["{tmp_path}/not-a-key.pub"]\n': (
            "listeners[0].trusted_keys", "not-a-key.pub"),
    }
    for body, (key, words) in cases.items():
        path = tmp_path / "c.toml"
        path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/rx.sock"\n{body}')
        problems = [p for p in check_file(path) if p.severity == "error"]
        assert len(problems) == 1 and problems[0].key == key and words in problems[0].reason, problems
        with pytest.raises(ConfigError) as exc:  # and the agent refuses it as it reads the file, naming both
            config.load(path)
        assert exc.value.key == key and str(exc.value).startswith(f"{path}: {key}: ")
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{tmp_path}/rx.sock"\n'
                    f'guest_signatures = "require"\ntrusted_keys = ["{pub}"]\n')
    assert not [p for p in check_file(path) if p.severity == "error"]


@pytest.mark.parametrize("body", ["sinks = [1]\n", "sinks = [\"file:x\"]\n"])
def test_a_sink_that_is_not_a_table_is_a_problem_not_a_crash(tmp_path: Path, body: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(body)
    assert [(p.key, p.reason.split(",")[0]) for p in check_file(path)] == [("sinks[0]", "expected a table")]
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "sinks[0]"


@pytest.mark.parametrize(("body", "kind"), [("[probes]\ncgroup = 1\n", "an integer (1)"),
                                           ("[[probes.cgroup]]\ninterval = 5\n", "an array"),
                                           ('[probes]\nlve = "on"\n', "a string")])
def test_a_probe_that_is_not_a_table_is_a_problem_not_a_crash(tmp_path: Path, body: str, kind: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(body + '[[sinks]]\nuri = "stdout:"\n')
    name = "lve" if "lve" in body else "cgroup"
    assert [(p.key, p.reason) for p in check_file(path)] == [
        (f"probes.{name}", f"expected a table ([probes.{name}]), got {kind}")]
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == f"probes.{name}"


def test_two_listeners_on_one_address_are_refused_and_a_repeated_listen_is_one(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    sock = tmp_path / "rx.sock"
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{sock}"\n'
                    f'[[listeners]]\nuri = "unix:{tmp_path}/other.sock"\n[[listeners]]\nuri = "unix:{sock}"\n')
    problems = [p for p in check_file(path) if p.severity == "error"]
    assert [(p.key, p.reason) for p in problems] == [
        ("listeners[2].uri", f"'unix:{sock}' is also listeners[0]: an address takes one listener")]
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "listeners[2].uri"
    path.write_text(f'[[sinks]]\nuri = "stdout:"\n[[listeners]]\nuri = "unix:{sock}"\nmax_connections = 3\n')
    cfg = config.load(path).with_listeners([f"unix:{sock}", f"unix:{tmp_path}/b.sock", f"unix:{tmp_path}/b.sock"])
    assert [(li.uri, li.max_connections) for li in cfg.listeners] == [
        (f"unix:{sock}", 3), (f"unix:{tmp_path}/b.sock", 256)]


def test_a_check_names_the_key_only_when_the_table_set_it() -> None:
    """"backoff_max must not be less than backoff_initial": only backoff_initial was written, so that is the key
    named, not one the user never wrote."""
    with pytest.raises(ConfigError) as info:
        config.parse({"sinks": [{"uri": "unix:/run/x.sock", "backoff_initial": 60}]}, env={})
    assert info.value.key == "sinks[0].backoff_initial"
    with pytest.raises(ConfigError) as info:
        config.parse({"sinks": [{"uri": "unix:/run/x.sock", "backoff_max": 0.01}]}, env={})
    assert info.value.key == "sinks[0].backoff_max"


@pytest.mark.parametrize(("body", "key"), [
    ('[probes.cgroup]\nroot = ""\n', "probes.cgroup.root"),
    ('[probes.lve]\npath = ""\n', "probes.lve.path"),
    ('[probes.mounts]\nproc_mounts = ""\n', "probes.mounts.proc_mounts"),
    ('[probes.taskstats]\nproc = ""\n', "probes.taskstats.proc"),
    ('[probes.link]\nnetns = ""\n', "probes.link.netns"),
    ('[probes.link]\nnetns = "../../etc/passwd"\n', "probes.link.netns"),
])
def test_an_empty_input_path_or_a_namespace_that_is_no_name_is_refused(tmp_path: Path, body: str, key: str) -> None:
    """Not a run whose probe reads the agent's working directory, or its own namespace, instead."""
    path = tmp_path / "c.toml"
    path.write_text(body + '[[sinks]]\nuri = "stdout:"\n')
    assert [p.key for p in check_file(path) if p.severity == "error"] == [key]
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == key


def test_a_link_netns_may_be_an_absolute_path(tmp_path: Path) -> None:
    """/proc/PID/ns/net or a runtime's own namespace file: opened as it is, as before."""
    path = tmp_path / "c.toml"
    path.write_text('[probes.link]\nnetns = "/proc/1/ns/net"\n[[sinks]]\nuri = "stdout:"\n')
    assert not [p for p in check_file(path) if p.severity == "error"]
    assert config.load(path).probe("link").options.netns == "/proc/1/ns/net"


@pytest.mark.parametrize(("body", "key"), [
    ('[probes.cgroup]\nroot = "/tmp/a\\u0000b"\n', "probes.cgroup.root"),
    ('[probes.lve]\npath = "/tmp/a\\u0000b"\n', "probes.lve.path"),
    ('[probes.mounts]\nproc_mounts = "/tmp/a\\u0000b"\n', "probes.mounts.proc_mounts"),
    ('[probes.taskstats]\nproc = "/tmp/a\\u0000b"\n', "probes.taskstats.proc"),
    ('[probes.taskstats]\ncgroups = ["/sys/fs/cgroup/x", "/tmp/a\\u0000b"]\n', "probes.taskstats.cgroups"),
    ('[probes.taskstats]\ncgroupstats = [""]\n', "probes.taskstats.cgroupstats"),
    ('[probes.cgroup]\nmountinfo = ""\n', "probes.cgroup.mountinfo"),
    ('[probes.mounts.watch]\nmountinfo = ""\n', "probes.mounts.watch.mountinfo"),
    ('[probes.lve]\nskip_user_ids = [1000, -1]\n', "probes.lve.skip_user_ids"),
    ('[probes.mounts]\nproc_root = ""\n', "probes.mounts.proc_root"),
    ('[probes.mounts]\nrootfs = ""\n', "probes.mounts.rootfs"),
    ('[probes.taskstats]\ncpu_possible = ""\n', "probes.taskstats.cpu_possible"),
    ('[agent]\nstate_dir = ""\n', "agent.state_dir"),
    ('[probes.mounts.watch]\ncoalesce = -1\n', "probes.mounts.watch.coalesce"),
    ('[probes.cgroup.watch]\ncoalesce = -1\n', "probes.cgroup.watch.coalesce"),
    ('[probes.link.watch]\ncoalesce = -1\n', "probes.link.watch.coalesce"),
    ('[probes.cgroup.watch]\nmax_watches = 5\nbuffer = 0\n', "probes.cgroup.watch.buffer"),
])
def test_a_probe_path_holding_a_nul_or_an_empty_one_in_a_list_is_refused(tmp_path: Path, body: str,
                                                                         key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(body + '[[sinks]]\nuri = "stdout:"\n')
    assert [p.key for p in check_file(path) if p.severity == "error"] == [key]


def test_a_host_id_with_control_characters_is_refused_from_the_file_and_the_environment() -> None:
    with pytest.raises(ConfigError, match="control character") as exc:
        config.parse({"agent": {"host_id": "web\x07\n01"}}, env={})
    assert exc.value.key == "agent.host_id"
    with pytest.raises(ConfigError, match=f"{config.ENV_HOST_ID}: holds a control character"):
        config.parse({}, env={config.ENV_HOST_ID: "a\nb"})
    assert config.parse({}, env={config.ENV_HOST_ID: "node-7 (rack 3)"}).agent.host_id == "node-7 (rack 3)"


@pytest.mark.parametrize(("doc", "key"), [
    ({"probes": {"cgroup": {"mountinfo": "/proc/self/mountinfo\0x"}}}, "probes.cgroup.mountinfo"),
    ({"probes": {"mounts": {"watch": {"mountinfo": "\0"}}}}, "probes.mounts.watch.mountinfo"),
    ({"probes": {"mounts": {"proc_root": "/proc\0"}}}, "probes.mounts.proc_root"),
    ({"probes": {"cgroup": {"include": ["/a", "/b\0"]}}}, "probes.cgroup.include"),
    ({"sinks": [{"uri": "stdout:"}, {"uri": "file:/x\0"}]}, "sinks[1].uri"),
    ({"agent": {"state_dir\0": "x"}}, 'agent."state_dir\\u0000"'),
])
def test_a_nul_character_anywhere_is_refused_naming_its_key(tmp_path: Path, doc: dict[str, object], key: str) -> None:
    """A path, name or URI never holds one, and deep in a probe it made a reading, or the agent, fail late."""
    with pytest.raises(ConfigError) as exc:
        config.parse(doc)
    assert exc.value.key == key and "NUL" in exc.value.reason


def test_a_nul_character_fails_run_and_config_check_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "nul.toml"
    path.write_text('[probes.cgroup]\nmountinfo = "/tmp\\u0000x"\n')
    for args in (["run", "--once", "--config", str(path)], ["config", "check", str(path)]):
        res = run_cli(args, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert b"probes.cgroup.mountinfo: must not hold a NUL character" in res.stderr + res.stdout


def test_a_sink_on_the_agents_own_listener_is_refused(tmp_path: Path) -> None:
    """Each event it sent would come back as a guest's copy of itself, and wait on itself for ever."""
    sock = tmp_path / "in.sock"
    with pytest.raises(ConfigError, match="is this agent's own listener") as exc:
        config.parse({"sinks": [{"uri": "stdout:"}, {"uri": f"unix:{sock}"}],
                      "listeners": [{"uri": f"unix:{tmp_path}/./in.sock"}]})
    assert exc.value.key == "sinks[1].uri"
    with pytest.raises(ConfigError, match="own listener") as exc:
        config.parse({"listeners": [{"uri": "unix:@hoststamp-in"}]}).with_sinks(["unix:@hoststamp-in"])
    assert exc.value.key == "--sink"
    # another socket is fine
    config.parse({"sinks": [{"uri": f"unix:{tmp_path}/out.sock"}], "listeners": [{"uri": f"unix:{sock}"}]})


@pytest.mark.parametrize(("doc", "key"), [
    ({"sinks": [{"uri": "file:x.ndjson", "spool": ""}]}, "sinks[0].spool"),
    ({"sinks": [{"uri": "stdout:"}], "listeners": [{"uri": "unix:/tmp/l.sock", "name": "a\nb\x07"}]},
     "listeners[0].name"),
    ({"sinks": [{"uri": "stdout:"}], "listeners": [{"uri": "unix:/tmp/l.sock", "name": "  "}]}, "listeners[0].name"),
])
def test_an_empty_spool_or_a_listener_name_that_is_no_hostpeer_is_refused(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(doc, env={})
    assert info.value.key == key


def test_config_check_reads_a_pipe_once_and_a_byte_order_mark_is_no_text(tmp_path: Path) -> None:
    body = '[probes.lve]\nenabled = true\n[probes.cgroup]\nenabled = false\n[[sinks]]\nuri = "file:x.ndjson"\n'
    res = run_cli(["config", "check", "/dev/stdin"], cwd=tmp_path, stdin=body.encode())
    assert res.returncode == 0, res.stderr.decode()
    assert "sinks: 1" in res.stdout.decode() and "lve" in res.stdout.decode()
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert config.load(bom).sinks[0].uri == "file:x.ndjson"
    assert not check_file(bom)


@pytest.mark.parametrize("name", ["segment_max_age", "retain_age", "retain_bytes"])
def test_each_archive_limit_is_named_alone(name: str) -> None:
    others = {k: 1 for k in ("segment_max_age", "retain_age", "retain_bytes") if k != name}
    with pytest.raises(ConfigError) as info:
        config.parse({"sinks": [{"uri": "archive:/tmp/a", **others, name: -1}]}, env={})
    assert info.value.key == f"sinks[0].{name}"


def test_a_key_name_with_control_characters_is_shown_escaped(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[probes.lve]\n"inter\\nval: forged\\nx.toml: probes.lve.interval" = 1\n'
                    '[[sinks]]\nuri = "stdout:"\n')
    (problem,) = check_file(path)
    assert "\n" not in str(problem) and '"inter\\nval: forged\\nx.toml: probes.lve.interval"' in str(problem)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert "\n" not in str(info.value)


def test_an_ack_timeout_within_the_heartbeat_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[sinks]]\nuri = "unix:/run/x.sock"\nack_timeout = 5\n'
                    '[[sinks]]\nuri = "unix:/run/y.sock"\nack_timeout = 30\n')
    problems = check_file(path)
    assert [(p.key, p.severity) for p in problems] == [("sinks[0].ack_timeout", "warning")]
    assert "heartbeat" in problems[0].reason


@pytest.mark.parametrize(("value", "shown"), [
    ("1979-05-27T07:32:00Z", "got 1979-05-27T07:32:00+00:00"),
    ("{ a = 1 }", "got a table"),
    ("'C:\\path'", 'got "C:\\\\path"'),
    ('"x\\"y\'z"', 'got "x\\"y\'z"'),
])
def test_values_are_shown_as_toml_writes_them(value: str, shown: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        config.parse(tomllib.loads(f"[agent]\nlog_format = {value}\n"), env={})
    assert str(info.value).endswith(shown), str(info.value)
