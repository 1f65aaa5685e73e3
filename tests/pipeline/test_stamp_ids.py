"""Event ids: unique per (source, id) as CloudEvents asks, and unique across one agent's sources too.

Consumers that key on the id alone (JetStream's Nats-Msg-Id de-duplication by default) must not
mistake the first cgroup event for the first lve event.
"""

from __future__ import annotations

import orjson

from agent.model import Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.keys import SigningKey


def _stamper() -> Stamper:
    return Stamper(SigningKey.generate(), "h", SequenceStore(None))


def test_first_events_of_different_sources_have_different_ids() -> None:
    stamper = _stamper()
    events = [stamper.stamp(Reading(probe=p, subject="s", output={"n": 1})) for p in ("cgroup", "lve", "mounts")]
    assert [e.sequence for e in events] == [1, 1, 1]
    assert len({e.id for e in events}) == 3


def test_kinds_of_one_source_share_its_id_space() -> None:
    stamper = _stamper()
    a = stamper.stamp(Reading(probe="mounts", subject="/mnt/a", output={"n": 1}))
    b = stamper.stamp(Reading(probe="mounts", subject="summary", output={"n": 2}, kind="summary"))
    assert a.source == b.source and a.type != b.type
    assert (a.sequence, b.sequence) == (1, 2)
    assert a.id.rsplit("-", 1)[0] == b.id.rsplit("-", 1)[0]
    assert a.id != b.id


def test_the_id_in_the_body_is_the_events_id() -> None:
    stamper = _stamper()
    ev = stamper.stamp(Reading(probe="link", subject="eth0", output={}))
    assert orjson.loads(ev.body)["id"] == ev.id
    assert ev.id.endswith("-1")


def test_source_is_a_uri_naming_the_host_and_the_probe_whatever_the_host_id() -> None:
    from urllib.parse import unquote, urlsplit

    from agent.signing.event import verify_event

    for host in ("3d1219c7c4c5404aaa1f6d2a48adfda4", "web-01.example.com", "my host/with?odd#chars", "h%41",
                 "h\u00f6st", "a:b@c"):
        key = SigningKey.generate()
        ev = Stamper(key, host, SequenceStore(None)).stamp(Reading(probe="lve", subject="s", output={"n": 1}))
        doc = orjson.loads(ev.body)
        parts = urlsplit(doc["source"])
        assert (parts.scheme, unquote(parts.netloc), parts.path, parts.query, parts.fragment) == (
            "hoststamp", host, "/lve", "", "")
        assert doc["hostid"] == host and doc["source"] == ev.source
        if host.replace("-", "").replace(".", "").isalnum() and host.isascii():
            assert doc["source"] == f"hoststamp://{host}/lve"  # ordinary ids as they are
        verify_event(doc, {key.keyid: key.verify_key()})
