"""The native planned guest path (agent/_native/restamp.c): byte for byte the Python path's events, or the event
left to Python untouched, with no sequence number taken."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import _native
from agent.pipeline import SequenceStore, Stamper
from agent.pipeline.guest import prepare_guests
from agent.signing.event import verify_event
from agent.signing.keys import SigningKey

pytestmark = pytest.mark.skipif(_native.Restamper is None, reason="the native restamper is not built here")

KEY = SigningKey.generate()
NOW = 1_795_000_000.25
PEER = "unix:uid=0,pid=1"


def _pair() -> tuple[Stamper, Stamper]:
    """(native, Python) stampers that make the same events."""
    fast = Stamper(KEY, "host-1", SequenceStore(None), clock=lambda: NOW)
    slow = Stamper(KEY, "host-1", SequenceStore(None), clock=lambda: NOW)
    slow._restamp = None
    assert fast._restamp is not None
    return fast, slow


def _results(st_: Stamper, events: list[dict[str, Any]]) -> list[Any]:
    return [type(r) if isinstance(r, Exception) else r.body for r in st_.stamp_guests(copy.deepcopy(events), PEER)]


def _native_count(st_: Stamper, events: list[dict[str, Any]]) -> int:
    """How many of ``events`` the native path stamps (their shapes planned first)."""
    st_.stamp_guests(copy.deepcopy(events), PEER)
    assert st_._restamp is not None
    before = st_._seq.last("guest://a")
    taken = sum(st_._restamp(copy.deepcopy(e), 7, b"", b"") is not None for e in events)
    assert st_._seq.last("guest://a") == before  # a given sequence number takes none
    return taken


def _ev(i: int, **extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e{i}", "source": "guest://a", "type": "t.v1", **extra}


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False,
                         allow_infinity=False), text)
json_data = st.recursive(json_scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                              st.dictionaries(text, kids, max_size=5)), max_leaves=12)
names = st.sampled_from(["traceparent", "region", "tenant", "attempt", "hostid", "sequence", "hostpeer",
                         "guestdssematerial", "guestsignedextattrs", "hostreceivedat", "guesthostid",
                         "guestsequence", "dssematerial",
                         "signedextattrs"])
ext_values = st.one_of(text, st.integers(-(2**62), 2**62), st.booleans(), st.none(), st.floats(0, 1),
                       st.just(""))
times = st.one_of(st.sampled_from(["2026-11-22T02:00:00Z", "2026-11-22t02:00:00.5z", "2026-11-22 02:00:60Z",
                                   "2024-02-29T23:59:59.000001Z", "2023-02-29T00:00:00Z", "0999-01-01T00:00:00Z",
                                   "2026-11-22T03:00:00+01:00", "2026-11-22T02:00:00.Z", "2026-13-01T00:00:00Z",
                                   "2026-11-22T24:00:00Z", "not a time", ""]),
                  st.builds(lambda y, mo, d, h, f: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:07:09{f}Z",
                            st.integers(1, 9999), st.integers(1, 12), st.integers(1, 31), st.integers(0, 23),
                            st.sampled_from(["", ".1", ".123456789"])))


@st.composite
def guest_events(draw: st.DrawFn) -> dict[str, Any]:
    ev: dict[str, Any] = {"specversion": draw(st.sampled_from(["1.0", "1.0", 1])),
                          "id": draw(st.one_of(text, st.integers(0, 9))),
                          "source": draw(st.sampled_from(["guest://a", "guest://b", "gäst://ü"])),
                          "type": draw(st.sampled_from(["t.v1", "t\n\"v2\""]))}
    if draw(st.booleans()):
        del ev[draw(st.sampled_from(list(ev)))]
    for attr, values in (("subject", st.one_of(st.none(), text, st.integers())),
                         ("datacontenttype", st.sampled_from([None, "application/json", "text/plain"])),
                         ("dataschema", st.sampled_from([None, "https://example.com/s"])), ("time", times)):
        if draw(st.booleans()):
            ev[attr] = draw(values)
    for name in draw(st.lists(names, max_size=4, unique=True)):
        ev[name] = draw(ext_values)
    choice = draw(st.integers(0, 3))
    if choice in (1, 2):
        ev["data"] = draw(json_data)
    elif choice == 3:
        ev["data_base64"] = "aGVsbG8="
    order = draw(st.permutations(list(ev)))
    return {k: ev[k] for k in order}


@settings(max_examples=600, deadline=None)
@given(st.lists(guest_events(), min_size=1, max_size=4))
def test_native_and_python_paths_make_the_same_bytes(events: list[dict[str, Any]]) -> None:
    fast, slow = _pair()
    # twice: the first time plans the shapes (Python), the second takes the native path where it can
    for _ in range(2):
        got, expected = _results(fast, events), _results(slow, events)
        assert got == expected
    for body in got:
        if isinstance(body, bytes):
            verify_event(orjson.loads(body), {KEY.keyid: KEY.verify_key()})


def test_ordinary_events_take_the_native_path_unchanged_and_in_sequence() -> None:
    fast, slow = _pair()
    events = [_ev(i, time="2026-11-22T02:00:00.5Z", subject="s", traceparent="00-ab", attempt=i, flag=True,
                  data={"n": i, "nested": {"b": [1, "x", None, False], "a": "ü\u2028\x01"}}) for i in range(40)]
    assert _native_count(fast, events) == 40
    slow.stamp_guests(copy.deepcopy(events), PEER)  # as many sequence numbers as the planning round took
    kept = copy.deepcopy(events)
    out = fast.stamp_guests(events, PEER, owned=True)
    assert events == kept  # read, never changed
    want = slow.stamp_guests(copy.deepcopy(kept), PEER)
    assert [e.body for e in out] == [e.body for e in want]  # type: ignore[union-attr]
    assert [orjson.loads(e.body)["sequence"] for e in out] == [str(n) for n in range(41, 81)]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"data": {"x": 0.5}}, "a float: JCS number form"),
        ({"data": {"x": 1.0}}, "an integral float"),
        ({"data": [2**53]}, "an integer beyond 2^53"),
        ({"data": {"é": 1}}, "a key that is not ASCII: JCS sorts by UTF-16"),
        ({"data": "text"}, "string data"),
        ({"data": None}, "null data"),
        ({"data_base64": "aGk="}, "base64 data"),
        ({"time": "2026-11-22T03:00:00+01:00"}, "a time with an offset"),
        ({"time": "0999-11-22T03:00:00Z"}, "a year before 1000"),
        ({"time": "2023-02-29T00:00:00Z"}, "a day that does not exist"),
        ({"subject": None}, "a null attribute"),
        ({"ratio": 0.5}, "a float attribute"),
        ({"big": 2**70}, "an integer beyond 64 bits"),
        ({"note": "\ud800"}, "a lone surrogate"),
    ],
)
def test_what_the_native_path_leaves_to_python_takes_no_sequence_number(extra: dict[str, Any], why: str) -> None:
    events = [_ev(1), _ev(2, **extra), _ev(3)]
    assert _native_count(_pair()[0], [_ev(2, **extra)]) == 0, why
    fast, slow = _pair()
    for _ in range(2):  # the second time with every shape planned
        got = _results(fast, events)
        assert got == _results(slow, events)
    stamped = [orjson.loads(b)["sequence"] for b in got if isinstance(b, bytes)]
    assert stamped == [str(n) for n in range(len(stamped) + 1, 2 * len(stamped) + 1)]  # no gap, in event order


def test_deep_and_wide_data_match_the_python_path() -> None:
    deep: Any = {"z": 1}
    for i in range(200):  # deeper than the native walk goes
        deep = {"k": deep, "i": i}
    wide = {f"k{i:03d}": i for i in range(300)}  # more keys than fit on the stack
    events = [_ev(1, data=deep), _ev(2, data=wide), _ev(3, data=[wide, [[[]]], {}])]
    assert _native_count(_pair()[0], events) == 2
    fast, slow = _pair()
    for _ in range(2):
        assert _results(fast, events) == _results(slow, events)


def test_sequence_numbers_given_by_the_caller_are_used() -> None:
    fast, slow = _pair()
    events = [_ev(i, data={"i": i}) for i in range(5)]
    for st_ in (fast, slow):
        st_.stamp_guests(copy.deepcopy(events), PEER)  # plan
    seqs = [100, 7, 7, 2**40, 1]
    got = [e.body for e in fast.stamp_guests(copy.deepcopy(events), PEER, sequences=seqs)]  # type: ignore[union-attr]
    want = [e.body for e in slow.stamp_guests(copy.deepcopy(events), PEER, sequences=seqs)]  # type: ignore[union-attr]
    assert got == want and orjson.loads(got[3])["sequence"] == str(2**40)


@pytest.mark.parametrize("seq", [2**63, 2**70, -5, True, 5.0, None])
def test_unusual_sequence_numbers_given_by_the_caller_match_the_python_path(seq: Any) -> None:
    fast, slow = _pair()
    events = [_ev(1, data={"i": 1})]
    for st_ in (fast, slow):
        st_.stamp_guests(copy.deepcopy(events), PEER)  # plan
    got = [type(r) if isinstance(r, Exception) else r.body
           for r in fast.stamp_guests(copy.deepcopy(events), PEER, sequences=[seq])]
    want = [type(r) if isinstance(r, Exception) else r.body
            for r in slow.stamp_guests(copy.deepcopy(events), PEER, sequences=[seq])]
    assert got == want


def test_a_sequence_store_that_changes_the_event_does_not_change_the_result() -> None:
    fast, slow = _pair()
    fast.stamp_guests([_ev(0, data={}, subject="s")], PEER)  # the shape planned: the next one is native
    slow.stamp_guests([_ev(0, data={}, subject="s")], PEER)
    real = fast._seq.next
    target = _ev(1, data={"n": 1}, subject="s")
    expected = slow.stamp_guests([copy.deepcopy(target)], PEER)

    def meddling(source: str) -> int:
        target.clear()  # drops the event's own references to its id, source and type
        target["id"] = "changed"
        return real(source)

    assert _native.Restamper is not None
    fast._restamp = _native.Restamper(fast._shapes, fast._texts, meddling).stamp
    (got,) = fast.stamp_guests([target], PEER)
    assert target == {"id": "changed"}  # next_seq ran, on the native path
    assert got.body == expected[0].body and got.id == "e1" and got.source == "guest://a"  # type: ignore[union-attr]


def test_a_failing_sequence_store_refuses_the_event_alone() -> None:
    fast, _ = _pair()
    fast.stamp_guests([_ev(0, data={})], PEER)
    real = fast._seq.next
    calls = []

    def flaky(source: str) -> int:
        calls.append(source)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(source)

    assert _native.Restamper is not None
    fast._restamp = _native.Restamper(fast._shapes, fast._texts, flaky).stamp
    out = fast.stamp_guests([_ev(i, data={}) for i in range(1, 4)], PEER)
    assert [type(o).__name__ for o in out] == ["Event", "OSError", "Event"]


def test_bad_arguments_are_type_errors_not_crashes() -> None:
    fast, _ = _pair()
    assert fast._restamp is not None
    with pytest.raises(TypeError):
        fast._restamp(_ev(1), None, "head", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fast._restamp(_ev(1), None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _native.Restamper({}, {}, 5)  # type: ignore[arg-type, misc]
    assert fast._restamp([("not", "a dict")], None, b"", b"") is None  # type: ignore[arg-type]
    # a plan that is not one the Python side makes is left alone
    fast.stamp_guests([_ev(1)], PEER)
    key = tuple(_ev(1))
    fast._shapes[key] = fast._shapes[key].__class__(**{**{s: getattr(fast._shapes[key], s) for s in
                                                          fast._shapes[key].__slots__}, "native": ("junk",)})
    assert fast._restamp(_ev(2), None, b"", b"") is None


def test_prepare_takes_the_native_path_for_a_whole_batch() -> None:
    fast, _ = _pair()
    events = [_ev(i, data={"i": i}) for i in range(10)]
    prepare_guests(fast, copy.deepcopy(events[:1]), PEER)
    prepared = prepare_guests(fast, copy.deepcopy(events), PEER)
    assert prepared.out == [None] * 10 and len(prepared.digests) == 10
