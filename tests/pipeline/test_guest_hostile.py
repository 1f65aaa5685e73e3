"""What a hostile guest's events cannot do to the stamper: grow its memory for good, or take a batch down."""

from __future__ import annotations

from typing import Any

import orjson

from agent.pipeline import SequenceStore, Stamper
from agent.pipeline.guest import MAX_SHAPE_NAMES, MAX_SHAPES
from agent.signing.keys import SigningKey

KEY = SigningKey.generate()


def _ev(i: int, **extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e{i}", "source": "guest://a", "type": "t", "data": {"i": i}, **extra}


def test_an_event_with_many_names_is_stamped_but_its_shape_is_not_kept() -> None:
    st = Stamper(KEY, "h", SequenceStore(None))
    wide = _ev(0, **{f"x{n}": "v" for n in range(MAX_SHAPE_NAMES + 10)})
    (out,) = st.stamp_guests([wide], "vsock:3")
    assert not isinstance(out, Exception) and orjson.loads(out.body)["x70"] == "v"
    assert not st._shapes


def test_the_shape_memory_starts_again_when_full_rather_than_freezing() -> None:
    st = Stamper(KEY, "h", SequenceStore(None))
    st.stamp_guests([_ev(i, **{f"k{i}": "v"}) for i in range(MAX_SHAPES + 5)], "vsock:3")
    assert 0 < len(st._shapes) <= MAX_SHAPES
    assert (*_ev(0), f"k{MAX_SHAPES + 4}") in st._shapes  # the newest shapes are remembered


def test_long_attribute_values_are_hashed_not_kept() -> None:
    st = Stamper(KEY, "h", SequenceStore(None))
    st.stamp_guests([_ev(i, blob="x" * 10_000 + str(i)) for i in range(20)], "vsock:3")
    assert all(len(t) <= 256 for t in st._texts)


def test_data_too_deep_to_encode_is_refused_alone_without_holding_the_batch() -> None:
    st = Stamper(KEY, "h", SequenceStore(None))
    deep: Any = 1
    for _ in range(600):
        deep = [deep]
    out = st.stamp_guests([_ev(1), _ev(2, data=deep), _ev(3)], "vsock:3")
    assert [isinstance(o, Exception) for o in out] == [False, True, False]
    refused = out[1]
    assert isinstance(refused, Exception)
    # kept as an answer for as long as the receiver remembers the frame: no traceback holding the batch
    assert refused.__traceback__ is None and refused.__context__ is None


def test_an_impossible_date_is_refused_without_its_traceback() -> None:
    st = Stamper(KEY, "h", SequenceStore(None))
    (out,) = st.stamp_guests([_ev(1, time="2024-13-45T00:00:00Z")], "vsock:3")
    assert isinstance(out, Exception) and "2024-13-45" in str(out) and out.__traceback__ is None


def test_a_refused_event_takes_no_sequence_number() -> None:
    st = Stamper(KEY, "h", SequenceStore(None))
    st._restamp = None  # the Python path (the native one leaves these events to it)
    for refused in (_ev(2, ratio=0.5), _ev(2, big=2**70), _ev(2, time="2023-02-29T00:00:00Z"),
                    # and on the generic path (a null attribute sends an event there)
                    _ev(2, time="2023-02-29T00:00:00Z", subject=None), _ev(2, ratio=0.5, subject=None),
                    # data_base64 that is not base64, a time zone offset of 24 hours
                    {**_ev(2), "data": None, "data_base64": "A A=="}, {**_ev(2), "data": None, "data_base64": "-_8="},
                    _ev(2, time="2024-01-01T10:00:00+24:00")):
        for _ in range(2):  # unplanned, then planned
            out = st.stamp_guests([_ev(1), refused, _ev(3)], "vsock:3")
            assert isinstance(out[1], Exception)
            seqs = [int(orjson.loads(o.body)["sequence"]) for o in out if not isinstance(o, Exception)]
            assert seqs[1] == seqs[0] + 1
