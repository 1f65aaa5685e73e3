"""Readings whose text is not valid Unicode, or that JSON cannot carry, still become signed events.

The kernel names things in bytes: a cgroup directory, a mount point or a link
may be named in bytes that are not UTF-8 (an unprivileged user can make such a
name). Python holds those bytes as lone surrogates, which no JSON encoder
takes; such a reading is signed with the bytes escaped as ``\\xNN``, and a
reading that cannot be signed even then (an object JSON has no form for)
becomes an error reading. Neither may take the probe, or the agent, down, nor
leave a gap in the sequence.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import orjson

from agent.model import Reading, escape_text
from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, Stamper
from agent.pipeline.router import Pipeline
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey
from tests.helpers import run_cli

BYTES_NAME = os.fsdecode(b"/caf\xe9")  # what os.listdir gives for a directory named in Latin-1


def _stamper() -> tuple[Stamper, SigningKey]:
    key = SigningKey.generate()
    return Stamper(key, "h", SequenceStore(None)), key


def test_escape_text_writes_the_bytes_that_are_not_utf8_and_leaves_valid_text_alone() -> None:
    assert escape_text(BYTES_NAME) == "/caf\\xe9"
    assert escape_text("/caf\u00e9") == "/caf\u00e9"
    assert escape_text("a\ud800b") == "a\\ud800b"  # a lone surrogate of another origin
    text = "plain"
    assert escape_text(text) is text


def test_a_reading_named_in_bytes_that_are_not_utf8_is_signed_with_them_escaped() -> None:
    stamper, key = _stamper()
    reading = Reading(probe="cgroup", subject=BYTES_NAME, inputs=(f"/sys/fs/cgroup{BYTES_NAME}/cpu.stat",),
                      output={"children": [BYTES_NAME], BYTES_NAME: {"usage_usec": 1}})
    event, problem = stamper.stamp_or_error(reading)
    assert problem is None
    body = orjson.loads(event.body)
    verify_event(body, {key.keyid: key.verify_key()})
    assert body["subject"] == "/caf\\xe9"
    assert body["data"]["inputs"] == ["/sys/fs/cgroup/caf\\xe9/cpu.stat"]
    assert body["data"]["output"] == {"children": ["/caf\\xe9"], "/caf\\xe9": {"usage_usec": 1}}
    assert "error" not in body["data"] and event.sequence == 1


def test_a_reading_json_cannot_carry_becomes_an_error_reading_without_a_gap_in_the_sequence() -> None:
    stamper, key = _stamper()
    bad = Reading(probe="cgroup", subject=BYTES_NAME, output={"handle": object()})
    event, problem = stamper.stamp_or_error(bad)
    assert problem is not None and "unserializable reading" in problem
    body = orjson.loads(event.body)
    verify_event(body, {key.keyid: key.verify_key()})
    assert body["subject"] == "/caf\\xe9" and body["data"]["output"] == {} and body["data"]["error"] == problem
    assert event.sequence == 1  # the refused attempts took no number
    following, _ = stamper.stamp_or_error(Reading(probe="cgroup", subject="/ok", output={"n": 1}))
    assert following.sequence == 2


def test_the_pipeline_signs_and_queues_them_and_counts_only_the_unserializable() -> None:
    stamper, _key = _stamper()
    q = SinkQueue(10)
    pipeline = Pipeline(stamper, [q], PipelineStats())

    async def go() -> None:
        await pipeline.submit(Reading(probe="mounts", subject=BYTES_NAME, output={"target": BYTES_NAME}))
        await pipeline.submit(Reading(probe="mounts", subject="/x", output={"n": {1, 2}}))

    asyncio.run(go())
    assert pipeline.stats.signed == 2 and pipeline.stats.rejected == 1
    assert len(q) == 2


def test_probe_cgroup_reports_a_cgroup_named_in_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """End to end through ``hoststamp probe``: it used to end in a traceback, printing nothing."""
    root = tmp_path / "cg"
    for name in (b"ok", b"caf\xe9"):
        d = os.path.join(os.fsencode(root), name)
        os.makedirs(d)
        with open(os.path.join(d, b"cpu.stat"), "w") as f:
            f.write("usage_usec 5\nuser_usec 3\nsystem_usec 2\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[probes.cgroup]\nroot = "{root}"\n')
    assert run_cli(["keys", "generate", "--dir", str(tmp_path / "keys")], cwd=tmp_path).returncode == 0
    out = run_cli(["probe", "cgroup", "--config", str(cfg), "--key", str(tmp_path / "keys" / "host.key")],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    subjects = {orjson.loads(line)["subject"] for line in out.stdout.splitlines()}
    assert {"/ok", "/caf\\xe9"} <= subjects
    (tmp_path / "ev.ndjson").write_bytes(out.stdout)
    verified = run_cli(["verify", "--pub", str(tmp_path / "keys" / "host.pub"), str(tmp_path / "ev.ndjson")],
                       cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()


def test_a_subject_is_a_cloudevents_string_whatever_the_name_it_comes_from() -> None:
    """A directory may be named with a newline or an escape: the subject attribute may not hold them (the data
    may, JSON escapes them there)."""
    stamper, key = _stamper()
    event, problem = stamper.stamp_or_error(Reading(probe="mounts", subject="/mnt/a\nOK\x1b[1A\x85",
                                                    output={"target": "/mnt/a\nOK"}))
    body = orjson.loads(event.body)
    verify_event(body, {key.keyid: key.verify_key()})
    assert problem is None and body["subject"] == "/mnt/a\\x0aOK\\x1b[1A\\u0085"
    assert body["data"]["output"] == {"target": "/mnt/a\nOK"}
    assert escape_text("tab\there", attribute=True) == "tab\\x09here" and escape_text("tab\there") == "tab\there"


def test_a_reading_whose_time_no_timestamp_can_write_is_an_error_reading_without_a_gap() -> None:
    stamper, key = _stamper()
    for n, when in enumerate((math.nan, math.inf, 1e20, -1.0), 1):
        event, problem = stamper.stamp_or_error(Reading(probe="lve", subject="s", output={}, time=when,
                                                        inputs=(Path("/proc/lve/list"),)))  # type: ignore[arg-type]
        body = orjson.loads(event.body)
        verify_event(body, {key.keyid: key.verify_key()})
        assert event.sequence == n
        if when == -1.0:  # 1969 is a time RFC 3339 writes: nothing wrong with it
            assert problem is None and body["time"].startswith("1969-12-31T23:59:59")
        else:
            assert problem is not None and body["data"]["error"] == problem
        assert body["data"]["inputs"] == ["/proc/lve/list"]
    assert escape_text("\U0010fffe", attribute=True) == "\\U0010fffe"
