"""The native guest-signature check (agent._native.restamp.Checker): it says yes only where the Python checks
(and the plain reference verifier) say yes, and it does say yes for ordinary signed events."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import _native
from agent.signing.dsse import encode_envelope, pae
from agent.signing.event import PAYLOAD_TYPE, EventChecker, material, sign_event
from agent.signing.keys import SigningKey
from tests.signing.test_checker import ATTRIBUTE_TAMPERING, GUEST, KEYS, OTHER, _outcome, reference_verify

pytestmark = pytest.mark.skipif(_native.Checker is None, reason="the native checker is not built here")


def _checker() -> EventChecker:
    checker = EventChecker(KEYS)
    assert checker._native is not None
    return checker


def plain_event(**over: Any) -> dict[str, Any]:
    """A signed guest event of the kinds the native check reads whole (no floats in its data)."""
    ev: dict[str, Any] = {
        "specversion": "1.0", "id": "guest-00000017", "source": "guest://vm-17/app", "type": "io.example.guest.v1",
        "time": "2026-11-22T02:00:00.123456Z", "subject": "/srv/app/worker-3", "datacontenttype": "application/json",
        "data": {"requests": 1017, "errors": 3, "latency_us": {"p50": 812, "p99": 4410}, "tags": ["a", "b"]},
        "app": "billing", "zone": "eu-1", "attempt": 3, "canary": False, "traceparent": "00-abc-def-01",
    }
    sign_event(ev, GUEST, ["app", "zone", "attempt", "canary"])
    ev.update(over)
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(ev))
    return parsed


def _native_says(checker: EventChecker, event: dict[str, Any]) -> bool:
    before = copy.deepcopy(event)
    assert checker._native is not None
    said = checker._native.verifies(event)
    assert event == before
    if said:  # never a yes where the reference says no
        assert _outcome(lambda: reference_verify(event, KEYS))[0] == "ok"
    return said


def test_ordinary_signed_events_verify_natively() -> None:
    checker = _checker()
    checker.check(plain_event())  # the first reads signedextattrs into the cache the native check uses
    for i in range(20):
        ev = plain_event(id=f"g-{i}")
        ev = {**ev, "dssematerial": _resigned_material(ev)}
        assert _native_says(checker, ev)
    # without signed extension attributes, without time, data as a list, no data at all
    for over in ({}, {"time": None}, {"data": [1, "x", None]}):
        ev = {k: v for k, v in plain_event(**over).items() if v is not None}
        ev.pop("signedextattrs")
        sign_event(ev, GUEST)
        assert _native_says(checker, orjson.loads(orjson.dumps(ev)))
    ev = plain_event()
    del ev["data"]
    ev.pop("signedextattrs")
    sign_event(ev, GUEST)
    assert _native_says(checker, ev)


def _resigned_material(ev: dict[str, Any]) -> str:
    payload = material(ev, ["app", "zone", "attempt", "canary"])
    sig = GUEST.sign(pae(PAYLOAD_TYPE.encode(), payload))
    return base64.b64encode(encode_envelope(PAYLOAD_TYPE, payload, GUEST.keyid, sig)).decode()


@pytest.mark.parametrize("tamper", [t for _, t in ATTRIBUTE_TAMPERING], ids=[n for n, _ in ATTRIBUTE_TAMPERING])
def test_tampered_attributes_are_never_passed(tamper: Any) -> None:
    checker = _checker()
    checker.check(plain_event())
    ev = plain_event()
    tamper(ev)
    _native_says(checker, ev)
    # and the checker as a whole answers as the reference does
    want = _outcome(lambda: reference_verify(ev, KEYS))
    got = _outcome(lambda: checker.check(ev))
    assert got == (want[0], None if want[0] == "ok" else want[1])


def _flip(text: str, at: int) -> str:
    c = "A" if text[at] != "A" else "B"
    return text[:at] + c + text[at + 1:]


def test_envelope_tampering_is_never_passed() -> None:
    checker = _checker()
    good = plain_event()
    assert not _native_says(checker, good)  # its signedextattrs not read yet: Python's
    checker.check(good)
    assert _native_says(checker, good)
    mat = good["dssematerial"]
    env = base64.b64decode(mat)
    payload = material(good, ["app", "zone", "attempt", "canary"])
    cases = [_flip(mat, i) for i in range(0, len(mat) - 4, 7)]
    cases += [mat + "=", mat[:-4], " " + mat, mat + "AAAA", ""]
    urlsafe = mat.replace("+", "-").replace("/", "_")
    if urlsafe != mat:  # URL-safe base64 is valid (DSSE allows it), but the Python checks read it
        cases.append(urlsafe)
    cases += [base64.b64encode(env + b" ").decode(), base64.b64encode(b" " + env).decode()]
    for key, keyid, ptype in ((OTHER, OTHER.keyid, PAYLOAD_TYPE), (OTHER, GUEST.keyid, PAYLOAD_TYPE),
                              (GUEST, GUEST.keyid, PAYLOAD_TYPE + "x")):
        sig = key.sign(pae(ptype.encode(), payload))
        cases.append(base64.b64encode(encode_envelope(ptype, payload, keyid, sig)).decode())
    for bad in cases:
        ev = {**good, "dssematerial": bad}
        assert not _native_says(checker, ev), bad
    assert not _native_says(checker, {**good, "dssematerial": 5})
    assert not _native_says(checker, {k: v for k, v in good.items() if k != "dssematerial"})


def test_only_ed25519_keys_are_checked_natively() -> None:
    assert EventChecker({})._native is None


def test_an_uninitialised_checker_raises_rather_than_crashing() -> None:
    assert _native.Checker is not None and _native.Restamper is not None
    with pytest.raises(RuntimeError):
        _native.Checker.__new__(_native.Checker).verifies({"dssematerial": "AAAA"})
    with pytest.raises(RuntimeError):
        _native.Restamper.__new__(_native.Restamper).stamp({}, None, b"", b"")


def test_a_malleated_signature_is_refused_as_openssl_refuses_it() -> None:
    """s + L verifies under a lax Ed25519 (libsodium built with ED25519_COMPAT); this libsodium must refuse it, as
    the cryptography package does, or the native check would pass what the Python check refuses."""
    from agent._native.restamp import verify_detached

    order = 2**252 + 27742317777372353535851937790883648493
    key = SigningKey.generate()
    public = key.verify_key().public
    pk = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg = b"pae bytes"
    sig = key.sign(msg)
    s = int.from_bytes(sig[32:], "little") + order
    bad = sig[:32] + s.to_bytes(32, "little")
    assert verify_detached(sig, msg, pk) and not verify_detached(bad, msg, pk)
    with pytest.raises(InvalidSignature):
        public.verify(bad, msg)


def test_verify_detached_agrees_with_cryptography() -> None:
    from agent._native.restamp import verify_detached

    key = SigningKey.generate()
    pk = key.verify_key().public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg = b"pae bytes"
    sig = key.sign(msg)
    assert verify_detached(sig, msg, pk)
    assert not verify_detached(sig, msg + b"!", pk)
    assert not verify_detached(bytes(64), msg, pk)
    with pytest.raises(TypeError):
        verify_detached(sig[:10], msg, pk)


names = st.sampled_from(["app", "zone", "attempt", "canary", "traceparent", "note", "data", "data_base64", "time",
                         "subject", "id", "source", "type", "specversion", "datacontenttype", "signedextattrs"])
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False),
                   st.text(max_size=5), st.lists(st.integers(), max_size=2),
                   st.dictionaries(st.text("abé", max_size=2), st.integers(), max_size=2),
                   st.sampled_from(["billing", "eu-1", "2026-11-22T02:00:00.123456Z", "application/json"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, values, max_size=3), st.lists(names, max_size=2))
def test_random_changes_to_a_signed_event_are_never_passed_wrongly(changes: dict[str, Any],
                                                                   removed: list[str]) -> None:
    checker = _checker()
    checker.check(plain_event())
    ev = plain_event()
    ev.update(changes)
    for name in removed:
        ev.pop(name, None)
    _native_says(checker, ev)
