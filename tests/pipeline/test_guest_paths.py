"""The planned guest path and the generic one make the same event, for every kind of guest event."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pipeline import SequenceStore, Stamper
from agent.pipeline.guest import _generic
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey

KEY = SigningKey.generate()
NOW = 1_795_000_000.25

names = st.sampled_from(["traceparent", "region", "tenant", "attempt", "hostid", "sequence", "hostpeer",
                         "guestdssematerial", "guestsignedextattrs", "hostreceivedat", "guesthostid",
                         "guestsequence"])
ext_values = st.one_of(st.text(max_size=12), st.integers(-(2**31), 2**31), st.booleans(), st.none())
times = st.sampled_from([None, "2026-11-22T02:00:00Z", "2026-11-22T02:00:00.123456Z", "2026-11-22T03:00:00+01:00",
                         "2026-11-22t02:00:00z"])
data = st.one_of(
    st.none(),
    st.dictionaries(st.text("abcxyz_", max_size=5), st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6),
                                                               st.text(max_size=6), st.none()), max_size=4),
    st.lists(st.integers(), max_size=3),
    st.text(max_size=10),
)


@st.composite
def guest_events(draw: st.DrawFn) -> dict[str, Any]:
    ev: dict[str, Any] = {"specversion": "1.0", "id": draw(st.text(min_size=1, max_size=8)),
                          "source": draw(st.sampled_from(["guest://a", "guest://b"])), "type": "t.v1"}
    for attr, values in (("subject", st.one_of(st.none(), st.text(max_size=6))),
                         ("datacontenttype", st.sampled_from([None, "application/json", "text/plain"])),
                         ("dataschema", st.sampled_from([None, "https://example.com/s"])), ("time", times)):
        if draw(st.booleans()):
            ev[attr] = draw(values)
    for name in draw(st.lists(names, max_size=3, unique=True)):
        ev[name] = draw(ext_values)
    choice = draw(st.integers(0, 2))
    if choice == 1:
        ev["data"] = draw(data)
    elif choice == 2:
        ev["data_base64"] = "aGVsbG8="
    if draw(st.booleans()):
        ev["dssematerial"] = draw(st.sampled_from(["", "ZW52ZWxvcGU="]))
        if draw(st.booleans()):
            ev["signedextattrs"] = draw(st.sampled_from(["", "region"]))
    return ev


@settings(max_examples=400, deadline=None)
@given(guest_events())
def test_planned_and_generic_paths_agree(event: dict[str, Any]) -> None:
    fast = Stamper(KEY, "host-1", SequenceStore(None), clock=lambda: NOW)
    slow = Stamper(KEY, "host-1", SequenceStore(None), clock=lambda: NOW)
    recv = slow._recv_clock.render(NOW)[0].decode()
    try:
        expected: Any = orjson.loads(_generic(slow, dict(event), "vsock:7", recv, None).body)
    except Exception as exc:  # the kind of refusal is what is compared
        expected = type(exc)
    (got,) = fast.stamp_guests([dict(event)], "vsock:7")
    result = type(got) if isinstance(got, Exception) else orjson.loads(got.body)
    assert result == expected
    if isinstance(result, dict):
        verify_event(result, {KEY.keyid: KEY.verify_key()})


def test_planned_path_is_taken_for_ordinary_events_and_owned_events_are_not_copied() -> None:
    st_ = Stamper(KEY, "host-1", SequenceStore(None), clock=lambda: NOW)
    events = [{"specversion": "1.0", "id": f"e{i}", "source": "guest://a", "type": "t", "subject": "s",
               "time": "2026-11-22T02:00:00.5Z", "data": {"n": i}} for i in range(3)]
    out = st_.stamp_guests(events, "vsock:7", owned=True)
    assert len(st_._shapes) == 1 and next(iter(st_._shapes.values())) is not None
    assert "data" not in events[0]  # changed in place: owned
    docs = [orjson.loads(e.body) for e in out]  # type: ignore[union-attr]
    assert [d["sequence"] for d in docs] == ["1", "2", "3"] and docs[2]["data"] == {"n": 2}


def test_a_guest_signature_over_huge_floats_still_checks_out_on_the_host_event() -> None:
    """Floats from 10^21 on stay floats (JCS writes them with an exponent, which reads back the same), so the
    guest's data is not changed and its signature, kept in guestdssematerial, still covers it."""
    from agent.signing.event import sign_event

    guest = SigningKey.generate()
    ev: dict[str, Any] = {"specversion": "1.0", "id": "g-1", "source": "guest://a", "type": "t.v1",
                          "data": {"f": 1e21, "g": -1.5e300, "n": 3, "s": "x"}}
    sign_event(ev, guest)
    st_ = Stamper(KEY, "host-1", SequenceStore(None), clock=lambda: NOW)
    (out,) = st_.stamp_guests([orjson.loads(orjson.dumps(ev))], "unix:uid=0,pid=1")
    assert not isinstance(out, Exception)
    host_ev = orjson.loads(out.body)
    assert b'"data":{"f":1e+21,"g":-1.5e+300,"n":3,"s":"x"}' in out.body
    verify_event(host_ev, {KEY.keyid: KEY.verify_key()})
    # the event as the guest signed it: the host's attributes taken away, the guest's signature put back
    as_sent = {k: v for k, v in host_ev.items()
               if k not in ("hostid", "hostreceivedat", "sequence", "hostpeer", "dssematerial", "signedextattrs")}
    as_sent["dssematerial"] = as_sent.pop("guestdssematerial")
    verify_event(as_sent, {guest.keyid: guest.verify_key()})


def test_the_verifier_puts_back_every_host_attribute_the_receiver_keeps() -> None:
    from agent.pipeline.guest import GUEST_ATTRIBUTES, HOST_ATTRIBUTES
    from agent.signing.audit import KEPT_AS

    assert set(KEPT_AS) == {*HOST_ATTRIBUTES, *GUEST_ATTRIBUTES}
