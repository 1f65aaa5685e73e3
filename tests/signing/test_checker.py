"""The lean verifier (EventChecker, check_event, verify_event) against a plain reference verifier.

The reference below is the verifier written out step by step: strict base64
(URL-safe accepted), the envelope parsed as JSON, the signature checked over the
DSSE PAE, then the material recomputed with :func:`material` (the function the
signer uses). Every event here, good or tampered, must get the same answer
from both: the same verified event, or a VerifyError with the same message.
One checker sees all events of a test in turn, so its caches are warm with
the untampered values when the tampered ones arrive.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import VerifyError
from agent.signing.checker import MAX_CHECKS
from agent.signing.dsse import encode_envelope, pae
from agent.signing.event import (
    CORE_ATTRIBUTES,
    PAYLOAD_TYPE,
    EventChecker,
    check_event,
    material,
    sign_event,
    signed_ext_names,
    verify_event,
)
from agent.signing.keys import SigningKey, VerifyKey
from tests.signing.reference import reference_b64d_canonical

GUEST = SigningKey.generate()
OTHER = SigningKey.generate()
KEYS: dict[str, VerifyKey] = {GUEST.keyid: GUEST.verify_key()}
CHECKER = EventChecker(KEYS)


def reference_verify(event: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> dict[str, Any]:
    raw = event.get("dssematerial")
    if not raw:
        raise VerifyError("event is not signed (no dssematerial)")
    try:
        env = orjson.loads(reference_b64d_canonical(raw, "dssematerial"))
    except orjson.JSONDecodeError:
        raise VerifyError("verification material is not a JSON DSSE envelope") from None
    if not isinstance(env, dict):
        raise VerifyError("verification material is not a JSON object")
    ptype = env.get("payloadType")
    if not isinstance(ptype, str):
        raise VerifyError("DSSE envelope has no payloadType")
    payload = reference_b64d_canonical(env.get("payload"), "DSSE payload")
    sigs_doc = env.get("signatures")
    if not isinstance(sigs_doc, list) or not sigs_doc:
        raise VerifyError("DSSE envelope has no signatures")
    sigs = []
    for s in sigs_doc:
        if not isinstance(s, dict):
            raise VerifyError("DSSE signature is not an object")
        keyid = s.get("keyid", "")
        if not isinstance(keyid, str):
            raise VerifyError("DSSE keyid is not a string")
        sigs.append((keyid, reference_b64d_canonical(s.get("sig"), "DSSE sig")))
    if ptype != PAYLOAD_TYPE:
        raise VerifyError(f"unknown verification payload type {ptype!r}")
    msg = pae(ptype.encode(), payload)
    # a signature without a key id is tried with every trusted key; MAX_CHECKS checks at most
    candidates = [(key, sig) for k, sig in sigs for key in ([keys[k]] if k in keys else [] if k else keys.values())]
    if not candidates:
        ids = ", ".join(k[:16] or "(no key id)" for k, _ in sigs) or "none"
        raise VerifyError(f"no signature by a trusted key (signed by: {ids})")
    if not any(key.verify(sig, msg) for key, sig in candidates[:MAX_CHECKS]):
        raise VerifyError("signature does not verify" if len(candidates) <= MAX_CHECKS else
                          f"signature does not verify (gave up after {MAX_CHECKS} checks)")
    if len(payload) != 32:
        raise VerifyError("verification material is not a 32-byte digest")
    names = signed_ext_names(event)
    if material(event, names) != payload:
        raise VerifyError("event does not match its signature (modified after signing)")
    keep = {*CORE_ATTRIBUTES, "time", "data", "data_base64", *names}
    return {k: v for k, v in event.items() if k in keep}


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except VerifyError as exc:
        return "refused", str(exc)


def assert_same_answer(event: dict[str, Any], checker: EventChecker = CHECKER) -> tuple[str, Any]:
    before = copy.deepcopy(event)
    expected = _outcome(lambda: reference_verify(event, KEYS))
    assert _outcome(lambda: verify_event(event, KEYS)) == expected
    assert _outcome(lambda: checker.verify(event)) == expected
    checked = _outcome(lambda: check_event(event, KEYS))
    assert checked == (expected[0], None if expected[0] == "ok" else expected[1])
    checked = _outcome(lambda: checker.check(event))
    assert checked == (expected[0], None if expected[0] == "ok" else expected[1])
    assert event == before  # nothing is changed by checking
    return expected


def guest_event(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "specversion": "1.0", "id": "guest-00000017", "source": "guest://vm-17/app", "type": "io.example.guest.v1",
        "time": "2026-11-22T02:00:00.123456Z", "subject": "/srv/app/worker-3", "datacontenttype": "application/json",
        "data": {"requests": 1017, "errors": 3, "latency_us": {"p50": 812, "p99": 4410}, "ratio": 0.25},
        "app": "billing", "zone": "eu-1", "traceparent": "00-abc-def-01",
    }
    sign_event(ev, GUEST, ["app", "zone"])
    ev.update(over)
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(ev))  # as a receiver has it: parsed from JSON
    return parsed


def _envelope(event: Mapping[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(base64.b64decode(event["dssematerial"]))
    return doc


def _with_envelope(event: dict[str, Any], env: Any, *, raw: bytes | None = None) -> dict[str, Any]:
    body = orjson.dumps(env) if raw is None else raw
    return {**event, "dssematerial": base64.b64encode(body).decode()}


def _resigned(event: dict[str, Any], payload: bytes, *, key: SigningKey = GUEST, ptype: str = PAYLOAD_TYPE,
              keyid: str | None = None) -> dict[str, Any]:
    """``event`` carrying a well-formed, correctly signed envelope over ``payload``."""
    sig = key.sign(pae(ptype.encode(), payload))
    return {**event, "dssematerial": base64.b64encode(
        encode_envelope(ptype, payload, key.keyid if keyid is None else keyid, sig)).decode()}


def _digest(event: dict[str, Any]) -> bytes:
    return base64.b64decode(_envelope(event)["payload"])


def test_untouched_events_verify_alike() -> None:
    assert assert_same_answer(guest_event())[0] == "ok"
    for i in range(20):  # a warm cache, event after event
        ev = guest_event(id=f"g-{i}")
        assert assert_same_answer(_resigned(ev, material(ev, ["app", "zone"])))[0] == "ok"


# (name, how to tamper with a signed guest event) -> every one must be refused, or accepted, by both alike
ATTRIBUTE_TAMPERING: list[tuple[str, Callable[[dict[str, Any]], None]]] = []
for _attr in (*CORE_ATTRIBUTES, "time", "app", "zone"):
    for _label, _value in (("other", "x"), ("int", 7), ("true", True), ("null", None), ("list", ["a"]),
                           ("dict", {"a": 1}), ("float", 1.5), ("empty", "")):
        ATTRIBUTE_TAMPERING.append((f"{_attr}={_label}", lambda ev, a=_attr, v=_value: ev.__setitem__(a, v)))
    ATTRIBUTE_TAMPERING.append((f"{_attr} removed", lambda ev, a=_attr: ev.pop(a, None)))
ATTRIBUTE_TAMPERING += [
    ("time in another zone, same instant", lambda ev: ev.__setitem__("time", "2026-11-22T03:00:00+01:00")),
    ("time without fraction", lambda ev: ev.__setitem__("time", "2026-11-22T02:00:00Z")),
    ("time a second later", lambda ev: ev.__setitem__("time", "2026-11-22T02:00:01.123456Z")),
    ("time with a non-ASCII fraction", lambda ev: ev.__setitem__("time", "2026-11-22T02:00:00.\u0661Z")),
    ("time lowercase", lambda ev: ev.__setitem__("time", "2026-11-22t02:00:00.1z")),
    ("time invalid date", lambda ev: ev.__setitem__("time", "2026-02-30T02:00:00Z")),
    ("time garbage", lambda ev: ev.__setitem__("time", "yesterday")),
    ("data value", lambda ev: ev["data"].__setitem__("errors", 4)),
    ("data float", lambda ev: ev["data"].__setitem__("ratio", 0.26)),
    ("data integral float", lambda ev: ev["data"].__setitem__("errors", 3.0)),
    ("data key added", lambda ev: ev["data"].__setitem__("extra", None)),
    ("data reordered", lambda ev: ev.__setitem__("data", dict(reversed(list(ev["data"].items()))))),
    ("data as list", lambda ev: ev.__setitem__("data", [ev["data"]])),
    ("data as string", lambda ev: ev.__setitem__("data", orjson.dumps(ev["data"]).decode())),
    ("data removed", lambda ev: ev.pop("data")),
    ("data_base64 beside data", lambda ev: ev.__setitem__("data_base64", "AAAA")),
    ("data moved to data_base64", lambda ev: ev.__setitem__(
        "data_base64", base64.b64encode(orjson.dumps(ev.pop("data"), option=orjson.OPT_SORT_KEYS)).decode())),
    ("text media type", lambda ev: ev.__setitem__("datacontenttype", "text/plain")),
    ("json media type with parameters", lambda ev: ev.__setitem__("datacontenttype", "application/json; x=1")),
    ("unsigned extension changed", lambda ev: ev.__setitem__("traceparent", "00-xyz-01")),
    ("unsigned extension added", lambda ev: ev.__setitem__("note", "hi")),
    ("signed extension renamed", lambda ev: ev.__setitem__("App", ev.pop("app"))),
    ("subject '1' as 1", lambda ev: ev.__setitem__("subject", 1)),
    ("subject 'true' as true", lambda ev: ev.__setitem__("subject", True)),
]
for _value in ("", "app", "zone", "zone,app", "app,zone,traceparent", "app,app,zone", "app,,zone", "app, zone",
               "App,zone", "app,zone,", "id,app,zone", "time", "dssematerial", "app;zone", 5, ["app", "zone"], None):
    ATTRIBUTE_TAMPERING.append((f"signedextattrs={_value!r}", lambda ev, v=_value: ev.__setitem__("signedextattrs", v)))
ATTRIBUTE_TAMPERING.append(("signedextattrs removed", lambda ev: ev.pop("signedextattrs")))


@pytest.mark.parametrize("tamper", [t for _, t in ATTRIBUTE_TAMPERING], ids=[n for n, _ in ATTRIBUTE_TAMPERING])
def test_tampered_attributes_get_the_same_answer(tamper: Callable[[dict[str, Any]], None]) -> None:
    assert_same_answer(guest_event())  # warm: the untampered values are in the caches
    ev = guest_event()
    tamper(ev)
    assert_same_answer(ev)


@pytest.mark.parametrize(("text", "same_text", "other_text"), [("1", 1, True), ("true", True, 1)])
def test_equal_dict_keys_with_other_texts_are_not_confused(text: str, same_text: Any, other_text: Any) -> None:
    """1 == True as dict keys, but their texts are "1" and "true": a cache must not hand one's digest to the other."""
    ev = guest_event(subject=text)
    ev = _resigned(ev, material(ev, ["app", "zone"]))
    for subject in (text, same_text):
        ev["subject"] = subject
        assert assert_same_answer(ev)[0] == "ok"
    ev["subject"] = other_text
    assert assert_same_answer(ev) == ("refused", "event does not match its signature (modified after signing)")


def _flip(text: str, i: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    c = text[i]
    return text[:i] + (alphabet[(alphabet.index(c) + 1) % 64] if c in alphabet else "A") + text[i + 1:]


def test_every_character_of_the_material_matters() -> None:
    ev = guest_event()
    raw = ev["dssematerial"]
    for i in range(len(raw)):
        assert_same_answer({**ev, "dssematerial": _flip(raw, i)})


ENVELOPE_TAMPERING: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("urlsafe base64", lambda ev: {**ev, "dssematerial": base64.urlsafe_b64encode(
        base64.b64decode(ev["dssematerial"])).decode()}),
    ("urlsafe, unpadded", lambda ev: {**ev, "dssematerial": base64.urlsafe_b64encode(
        base64.b64decode(ev["dssematerial"])).decode().rstrip("=")}),
    ("padding missing", lambda ev: {**ev, "dssematerial": ev["dssematerial"].rstrip("=")}),
    ("padding surplus", lambda ev: {**ev, "dssematerial": ev["dssematerial"] + "="}),
    ("padding inside", lambda ev: {**ev, "dssematerial": ev["dssematerial"][:8] + "=" + ev["dssematerial"][8:]}),
    ("newline inside", lambda ev: {**ev, "dssematerial": ev["dssematerial"][:76] + "\n" + ev["dssematerial"][76:]}),
    ("non-ASCII", lambda ev: {**ev, "dssematerial": ev["dssematerial"][:-3] + "\u00e9=="}),
    ("empty", lambda ev: {**ev, "dssematerial": ""}),
    ("not a string", lambda ev: {**ev, "dssematerial": 12}),
    ("bytes", lambda ev: {**ev, "dssematerial": ev["dssematerial"].encode()}),
    ("a list", lambda ev: {**ev, "dssematerial": [ev["dssematerial"]]}),
    ("removed", lambda ev: {k: v for k, v in ev.items() if k != "dssematerial"}),
    ("not JSON", lambda ev: _with_envelope(ev, None, raw=b"not json")),
    ("JSON array", lambda ev: _with_envelope(ev, [_envelope(ev)])),
    ("reformatted", lambda ev: _with_envelope(ev, None, raw=orjson.dumps(_envelope(ev),
                                                                         option=orjson.OPT_INDENT_2))),
    ("fields reordered", lambda ev: _with_envelope(ev, dict(reversed(list(_envelope(ev).items()))))),
    ("escaped key id", lambda ev: _with_envelope(ev, None, raw=orjson.dumps(_envelope(ev)).replace(
        b'"keyid":"' + GUEST.keyid[:1].encode(), b'"keyid":"\\u%04x' % ord(GUEST.keyid[0])))),
    ("escaped slash in payload", lambda ev: _with_envelope(ev, None, raw=orjson.dumps(_envelope(ev)).replace(
        b"/", b"\\/"))),
    ("key id upper case", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {**_envelope(ev)["signatures"][0], "keyid": GUEST.keyid.upper()}]})),
    ("key id missing", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {"sig": _envelope(ev)["signatures"][0]["sig"]}]})),
    ("key id a number", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {**_envelope(ev)["signatures"][0], "keyid": 5}]})),
    ("sig missing", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [{"keyid": GUEST.keyid}]})),
    ("sig short", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {"keyid": GUEST.keyid, "sig": base64.b64encode(bytes(63)).decode()}]})),
    ("sig urlsafe", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {"keyid": GUEST.keyid, "sig": base64.urlsafe_b64encode(
            base64.b64decode(_envelope(ev)["signatures"][0]["sig"])).decode()}]})),
    ("signatures empty", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": []})),
    ("signatures an object", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": {}})),
    ("signature a string", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": ["x"]})),
    ("untrusted signature first", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {"keyid": OTHER.keyid, "sig": base64.b64encode(bytes(64)).decode()}, *_envelope(ev)["signatures"]]})),
    ("bad trusted signature first", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {"keyid": GUEST.keyid, "sig": base64.b64encode(bytes(64)).decode()}, *_envelope(ev)["signatures"]]})),
    ("only untrusted signatures", lambda ev: _with_envelope(ev, {**_envelope(ev), "signatures": [
        {"keyid": OTHER.keyid, "sig": base64.b64encode(bytes(64)).decode()}]})),
    ("payload type other", lambda ev: _with_envelope(ev, {**_envelope(ev), "payloadType": "application/json"})),
    ("payload type missing", lambda ev: _with_envelope(ev, {k: v for k, v in _envelope(ev).items()
                                                            if k != "payloadType"})),
    ("payload missing", lambda ev: _with_envelope(ev, {k: v for k, v in _envelope(ev).items() if k != "payload"})),
    ("payload urlsafe", lambda ev: _with_envelope(ev, {**_envelope(ev), "payload": base64.urlsafe_b64encode(
        _digest(ev)).decode()})),
    ("payload other digest", lambda ev: _with_envelope(ev, {**_envelope(ev), "payload": base64.b64encode(
        bytes(32)).decode()})),
    ("signed by another key", lambda ev: _resigned(ev, _digest(ev), key=OTHER)),
    ("signed by another key, trusted key id", lambda ev: _resigned(ev, _digest(ev), key=OTHER, keyid=GUEST.keyid)),
    ("signed 31-byte payload", lambda ev: _resigned(ev, _digest(ev)[:31])),
    ("signed 33-byte payload", lambda ev: _resigned(ev, _digest(ev) + b"\0")),
    ("signed other payload type", lambda ev: _resigned(ev, _digest(ev), ptype="https://example.com/other")),
    ("signed other digest", lambda ev: _resigned(ev, bytes(32))),
    ("re-signed, same digest", lambda ev: _resigned(ev, _digest(ev))),
]


@pytest.mark.parametrize("tamper", [t for _, t in ENVELOPE_TAMPERING], ids=[n for n, _ in ENVELOPE_TAMPERING])
def test_tampered_envelopes_get_the_same_answer(tamper: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    assert_same_answer(guest_event())
    assert_same_answer(tamper(guest_event()))


def test_the_table_holds_both_answers() -> None:
    """The tables above are not all refusals: equivalent forms must pass, or the comparison proves little."""
    answers = {}
    for name, tamper in ATTRIBUTE_TAMPERING:
        ev = guest_event()
        tamper(ev)
        answers[name] = assert_same_answer(ev)[0]
    for name, etamper in ENVELOPE_TAMPERING:
        answers[name] = assert_same_answer(etamper(guest_event()))[0]
    accepted = {n for n, a in answers.items() if a == "ok"}
    assert {"time in another zone, same instant", "data reordered", "unsigned extension changed", "urlsafe base64",
            "fields reordered", "escaped slash in payload", "untrusted signature first",
            "bad trusted signature first", "re-signed, same digest"} <= accepted
    assert {"data value", "subject=other", "app=other", "signed by another key", "payload other digest",
            "signed 31-byte payload", "signedextattrs removed", "data_base64 beside data"}.isdisjoint(accepted)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False),
                         st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), c, max_size=3)),
                           max_leaves=8)
attribute_names = st.sampled_from([*CORE_ATTRIBUTES, "time", "data", "data_base64", "signedextattrs", "app", "zone",
                                   "traceparent"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(attribute_names, st.one_of(json_values, st.sampled_from(
    ["2026-11-22T02:00:00Z", "2026-11-22T02:00:00.5+00:00", "app", "app,zone", "zone", "guest://vm-17/app", "1.0",
     "/srv/app/worker-3", "application/json", "text/plain", "AAAA", "billing", "eu-1"])), max_size=4),
       st.lists(attribute_names, max_size=2))
def test_generated_tampering_gets_the_same_answer(changes: dict[str, Any], removed: list[str]) -> None:
    ev = guest_event()
    ev.update(changes)
    for name in removed:
        ev.pop(name, None)
    assert_same_answer(ev)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3))
def test_generated_envelope_byte_changes_get_the_same_answer(edits: list[tuple[int, int]]) -> None:
    ev = guest_event()
    body = bytearray(base64.b64decode(ev["dssematerial"]))
    for pos, value in edits:
        body[pos % len(body)] = value
    assert_same_answer(_with_envelope(ev, None, raw=bytes(body)))


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("AQgw+/=-_ \n\u00e9"), max_size=12))
def test_generated_base64_material_gets_the_same_answer(text: str) -> None:
    assert_same_answer(guest_event(dssematerial=text))


def test_events_of_many_kinds_in_turn() -> None:
    """Good and bad events interleaved through one checker: no answer depends on what came before."""
    checker = EventChecker(KEYS)
    for i in range(60):
        ev = guest_event(id=f"g-{i}", subject=f"/s/{i % 5}", source=f"guest://vm-{i % 3}/app")
        ev = _resigned(ev, material(ev, ["app", "zone"]))
        if i % 3 == 1:
            ev["subject"] = f"/s/{(i + 1) % 5}"
        elif i % 3 == 2:
            ev["time"] = f"2026-11-22T02:01:0{i % 10}Z"
        answer = assert_same_answer(ev, checker)
        assert answer[0] == ("ok" if i % 3 == 0 else "refused")


class SmallChecker(EventChecker):
    MAX_TEXTS = 8
    MAX_CONTEXTS = 3
    MAX_EXT = 2
    MAX_TEXT_LEN = 40


def test_caches_stay_within_their_bounds() -> None:
    checker = SmallChecker(KEYS)
    for i in range(40):
        ev: dict[str, Any] = {"specversion": "1.0", "id": f"g-{i}", "source": f"guest://vm-{i}/app",
                              "type": f"io.example.v{i}", "subject": f"/s/{i}", "time": f"2026-11-22T02:{i:02d}:00Z",
                              "data": {"n": i}, f"x{i}": "1", "app": "a"}
        sign_event(ev, GUEST, [f"x{i}", "app"])
        assert assert_same_answer(ev, checker)[0] == "ok"
        texts, contexts, ext = checker.cache_sizes()
        assert texts <= 8 and contexts <= 3 and ext <= 2
    assert checker.cache_sizes() != (0, 0, 0)  # and they were used


def test_long_strings_are_not_kept() -> None:
    checker = SmallChecker(KEYS)
    long_names = ",".join(f"x{i}" for i in range(20))
    ev: dict[str, Any] = {"specversion": "1.0", "id": "g", "source": "s" * 41, "type": "t", "data": None,
                          **{f"x{i}": "v" for i in range(20)}}
    sign_event(ev, GUEST, long_names.split(","))
    assert assert_same_answer(ev, checker)[0] == "ok"
    assert checker.cache_sizes()[1:] == (0, 0)  # the context holds a long source; the names string is long
    assert "s" * 41 not in checker._texts
    ev["source"] = "s" * 42
    assert assert_same_answer(ev, checker)[0] == "refused"


def test_a_checker_reads_its_trust_store_once() -> None:
    keys = dict(KEYS)
    checker = EventChecker(keys)
    keys.clear()
    checker.check(guest_event())
    with pytest.raises(VerifyError, match="trusted"):
        check_event(guest_event(), keys)


def test_a_lone_surrogate_is_a_refusal_not_a_crash() -> None:
    """JSON parsers refuse lone surrogates, but an event can come from elsewhere (a NATS header)."""
    ev = guest_event()
    ev["app"] = "\udc80"
    with pytest.raises(VerifyError, match="not valid Unicode"):
        CHECKER.check(ev)


def test_a_signature_without_a_key_id_is_tried_with_every_trusted_key() -> None:
    """DSSE makes ``keyid`` an optional hint: a signer that leaves it out is still verified."""
    ev = guest_event()
    env = _envelope(ev)
    for sig in env["signatures"]:
        del sig["keyid"]
    ok = _with_envelope(ev, env)
    assert assert_same_answer(ok)[0] == "ok"
    many = EventChecker({OTHER.keyid: OTHER.verify_key(), GUEST.keyid: GUEST.verify_key()})
    many.check(ok)
    only_other = EventChecker({OTHER.keyid: OTHER.verify_key()})
    with pytest.raises(VerifyError, match=r"^signature does not verify$"):
        only_other.check(ok)
    env["signatures"][0]["keyid"] = ""
    assert assert_same_answer(_with_envelope(ev, env))[0] == "ok"


def test_checks_per_event_are_bounded() -> None:
    ev = guest_event()
    env = _envelope(ev)
    good = env["signatures"][0]
    bad = {**good, "sig": base64.b64encode(bytes(64)).decode()}
    env["signatures"] = [bad] * MAX_CHECKS + [good]
    assert assert_same_answer(_with_envelope(ev, env)) == (
        "refused", f"signature does not verify (gave up after {MAX_CHECKS} checks)")
    env["signatures"] = [bad] * (MAX_CHECKS - 1) + [good]
    assert assert_same_answer(_with_envelope(ev, env))[0] == "ok"


def test_a_signed_extension_that_is_null_is_said_to_be_null() -> None:
    """Null is absent in the JSON event format: the refusal says so, not that None is no attribute type."""
    key = SigningKey.generate()
    ev = sign_event({"specversion": "1.0", "id": "a", "source": "s", "type": "t", "region": "eu"}, key, ["region"])
    with pytest.raises(VerifyError, match="signed extension attribute 'region' is null"):
        verify_event({**ev, "region": None}, {key.keyid: key.verify_key()})
    without = {k: v for k, v in ev.items() if k != "region"}
    with pytest.raises(VerifyError, match="signed extension attribute 'region' is missing"):
        verify_event(without, {key.keyid: key.verify_key()})
