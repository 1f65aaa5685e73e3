"""Every signed part of an emitted event is covered; unsigned parts are not handed back."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from agent.errors import VerifyError
from agent.model import Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.event import sign_event, verify_event
from agent.signing.keys import SigningKey


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def event(key: SigningKey) -> dict[str, Any]:
    stamper = Stamper(key, "host-a", SequenceStore(None))
    reading = Reading(probe="cgroup", subject="/a.slice", output={"cpu_stat": {"usage_usec": 5, "pressure": 0.25}},
                      inputs=("/sys/fs/cgroup/a.slice/cpu.stat",), probe_source="cgroupfs")
    doc: dict[str, Any] = orjson.loads(stamper.stamp(reading).body)
    return doc


def _keys(key: SigningKey) -> dict[str, Any]:
    return {key.keyid: key.verify_key()}


def test_untouched_event_verifies(event: dict[str, Any], key: SigningKey) -> None:
    verified = verify_event(event, _keys(key))
    assert verified["hostid"] == "host-a" and verified["sequence"] == "1"
    assert "dssematerial" not in verified and "signedextattrs" not in verified


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("id", "other"),
        ("source", "hoststamp://host-b/cgroup"),
        ("specversion", "1.1"),
        ("type", "io.hoststamp.host.v1.lve"),
        ("datacontenttype", "application/cloudevents+json"),
        ("dataschema", "https://example.com/schema"),
        ("subject", "/b.slice"),
        ("time", "2001-01-01T00:00:00Z"),
        ("hostid", "host-b"),
        ("hostreceivedat", "2001-01-01T00:00:00.000000Z"),
        ("sequence", "999"),
    ],
)
def test_tampered_attribute_fails(event: dict[str, Any], key: SigningKey, attr: str, value: str) -> None:
    event[attr] = value
    with pytest.raises(VerifyError):
        verify_event(event, _keys(key))


@pytest.mark.parametrize("attr", ["id", "source", "type", "subject", "time", "hostid", "hostreceivedat", "sequence"])
def test_removed_attribute_fails(event: dict[str, Any], key: SigningKey, attr: str) -> None:
    del event[attr]
    with pytest.raises(VerifyError):
        verify_event(event, _keys(key))


def test_time_shifted_within_the_second_still_verifies(event: dict[str, Any], key: SigningKey) -> None:
    # the extension signs time at second precision; the same instant in another zone is the same time
    sec = event["time"][:19]
    event["time"] = sec + ".000001Z"
    verify_event(event, _keys(key))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["output"]["cpu_stat"].__setitem__("usage_usec", 6),
        lambda d: d["output"]["cpu_stat"].__setitem__("pressure", 0.26),
        lambda d: d["inputs"].append("/etc/passwd"),
        lambda d: d.__setitem__("extra", True),
        lambda d: d.pop("probeSource"),
    ],
)
def test_tampered_data_fails(event: dict[str, Any], key: SigningKey, mutate: Any) -> None:
    mutate(event["data"])
    with pytest.raises(VerifyError, match="modified"):
        verify_event(event, _keys(key))


def test_data_reordered_keys_still_verifies(event: dict[str, Any], key: SigningKey) -> None:
    event["data"] = dict(reversed(list(event["data"].items())))
    verify_event(event, _keys(key))


@pytest.mark.parametrize("value", ["hostid,hostreceivedat", "hostid,sequence", "", "hostid,hostreceivedat,sequence,x",
                                   "hostreceivedat,hostid,sequence", "hostid,hostid,sequence", "id,sequence"])
def test_tampered_signedextattrs_fails(event: dict[str, Any], key: SigningKey, value: str) -> None:
    event["signedextattrs"] = value
    with pytest.raises(VerifyError):
        verify_event(event, _keys(key))


def test_signedextattrs_removed_fails(event: dict[str, Any], key: SigningKey) -> None:
    del event["signedextattrs"]
    with pytest.raises(VerifyError):
        verify_event(event, _keys(key))


def test_unsigned_extension_may_change_and_is_not_returned(event: dict[str, Any], key: SigningKey) -> None:
    event["traceparent"] = "00-abc-def-01"
    verified = verify_event(event, _keys(key))
    event["traceparent"] = "00-changed-01"
    verified2 = verify_event(event, _keys(key))
    assert "traceparent" not in verified and verified == verified2


def test_tampered_signature_material_fails(event: dict[str, Any], key: SigningKey) -> None:
    env = orjson.loads(base64.b64decode(event["dssematerial"]))
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    event["dssematerial"] = base64.b64encode(orjson.dumps(env)).decode()
    with pytest.raises(VerifyError, match="does not verify"):
        verify_event(event, _keys(key))


@pytest.mark.parametrize("material", ["", "not base64!", base64.b64encode(b"not json").decode(),
                                      base64.b64encode(b'{"payloadType":"x"}').decode()])
def test_garbage_material_fails_cleanly(event: dict[str, Any], key: SigningKey, material: str) -> None:
    event["dssematerial"] = material
    with pytest.raises(VerifyError):
        verify_event(event, _keys(key))


def test_other_key_fails(event: dict[str, Any]) -> None:
    other = SigningKey.generate()
    with pytest.raises(VerifyError, match="trusted"):
        verify_event(event, _keys(other))


def test_sign_event_roundtrip_with_string_and_binary_data(key: SigningKey) -> None:
    text = {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "datacontenttype": "text/plain",
            "data": "hello", "exta": "1"}
    sign_event(text, key, ["exta"])
    assert verify_event(text, _keys(key))["exta"] == "1"
    text["data"] = "hellO"
    with pytest.raises(VerifyError):
        verify_event(text, _keys(key))


def test_data_added_beside_signed_data_base64_fails(key: SigningKey) -> None:
    """Only data_base64 is hashed when both are there: a ``data`` slipped in beside it must not come back verified."""
    doc = sign_event({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                      "data_base64": base64.b64encode(b"signed bytes").decode()}, key)
    assert verify_event(doc, _keys(key))["data_base64"]
    with pytest.raises(VerifyError, match="exclusive"):
        verify_event({**doc, "data": {"forged": True}}, _keys(key))


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _unused_bit_set(text: str) -> str:
    """``text`` with the lowest bit of its last character set, a bit that encodes no byte: another text for
    the same bytes."""
    body = text.rstrip("=")
    out = body[:-1] + _ALPHABET[_ALPHABET.index(body[-1]) | 1] + text[len(body):]
    assert out != text and base64.b64decode(out) == base64.b64decode(text)
    return out


@pytest.mark.parametrize(("part", "named"), [("dssematerial", "dssematerial"), ("payload", "DSSE payload"),
                                             ("sig", "DSSE sig")])
def test_base64_of_the_signature_material_must_be_canonical(event: dict[str, Any], key: SigningKey, part: str,
                                                            named: str) -> None:
    """The same bytes spelled otherwise (an unused bit of the last base64 character set) are refused, in the
    material itself and in the envelope's payload and signature, by every way of checking an event."""
    from agent.signing.event import EventChecker
    from agent.signing.ndjson import verify_lines

    env = base64.b64decode(event["dssematerial"])
    doc = orjson.loads(env)
    if part == "dssematerial":
        material = _unused_bit_set(event["dssematerial"])
    else:
        old = doc["payload"] if part == "payload" else doc["signatures"][0]["sig"]
        assert env.count(old.encode()) == 1
        material = base64.b64encode(env.replace(old.encode(), _unused_bit_set(old).encode())).decode()
    tampered = {**event, "dssematerial": material}
    with pytest.raises(VerifyError, match=f"^{named}: not canonical base64"):
        verify_event(tampered, _keys(key))
    with pytest.raises(VerifyError, match=f"^{named}: not canonical base64"):
        EventChecker(_keys(key)).check(tampered)
    report = verify_lines([orjson.dumps(event), orjson.dumps(tampered)], _keys(key))
    assert [p.where for p in report.problems] == ["-:2"] and "not canonical base64" in report.problems[0].reason
