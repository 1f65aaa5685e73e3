"""canonical() and prepare() against the rfc8785 package, on generated JSON."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec.canonical import MAX_SAFE_INT, canonical, es_number, prepare

safe_ints = st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# text without lone surrogates (not representable in UTF-8 JSON at all)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = st.one_of(st.none(), st.booleans(), safe_ints, finite_floats, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(texts, children, max_size=5)),
    max_leaves=40,
)


@settings(max_examples=600, deadline=None)
@given(json_values)
def test_canonical_equals_rfc8785(value: Any) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(texts, json_values, max_size=6))
def test_prepare_bytes_equal_rfc8785_of_prepared(value: dict[str, Any]) -> None:
    ready, raw = prepare(value)
    assert raw == rfc8785.dumps(ready)
    # and what a verifier parses back canonicalizes to the same bytes
    assert canonical(orjson.loads(raw)) == raw


ascii_keys = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_-+.0123456789eE"), max_size=8)
# what telemetry looks like: ASCII keys, numbers of every kind, strings that look like numbers
telemetry = st.recursive(
    st.one_of(safe_ints, finite_floats, st.none(), st.booleans(), ascii_keys),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(ascii_keys, children, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(ascii_keys, telemetry, max_size=6))
def test_orjson_output_taken_as_is_only_when_it_is_jcs(value: dict[str, Any]) -> None:
    ready, raw = prepare(value)
    assert raw == rfc8785.dumps(ready)
    assert canonical(value) == rfc8785.dumps(value)


@settings(max_examples=300, deadline=None)
@given(finite_floats)
def test_floats_every_range(x: float) -> None:
    assert canonical({"x": x}) == rfc8785.dumps({"x": x})
    assert canonical([x]) == rfc8785.dumps([x])


@pytest.mark.parametrize(
    "x", [1e-7, 1e-6, 1e-5, 0.1, 1.5, 1e15 + 0.5, 1e16, 1e21, 1e22, 5e-324, 1.7976931348623157e308, -0.0, 2.5e-6]
)
def test_float_edges(x: float) -> None:
    assert canonical({"v": x}) == rfc8785.dumps({"v": x})


def test_deep_nesting() -> None:
    value: Any = {"leaf": "é"}
    for i in range(200):
        value = {"k": [value, i, 0.25]}
    assert canonical(value) == rfc8785.dumps(value)


def test_non_ascii_key_order_utf16() -> None:
    # U+E000 sorts after U+1F600 in UTF-8 but before it in UTF-16 code units
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert canonical(value) == rfc8785.dumps(value)


def test_prepare_big_ints_become_strings() -> None:
    ready, raw = prepare({"big": 2**64, "neg": -(2**60), "ok": MAX_SAFE_INT, "f": 3.0})
    assert ready == {"big": str(2**64), "neg": str(-(2**60)), "ok": MAX_SAFE_INT, "f": 3}
    assert raw == b'{"big":"18446744073709551616","f":3,"neg":"-1152921504606846976","ok":9007199254740991}'


@pytest.mark.parametrize("value", [{"y": math.inf}, {"x": "é", "y": -math.inf}, {"n": [math.nan, 1.5]}])
def test_prepare_non_finite_becomes_null(value: dict[str, Any]) -> None:
    ready, raw = prepare(value)
    assert b"null" in raw and raw == rfc8785.dumps(ready)


def test_canonical_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError):
        canonical({"x": object()})


def test_prepare_integral_floats_by_how_jcs_writes_them() -> None:
    # below 2^53: the integer; up to 10^21 JCS writes plain digits, a big integer to any reader: a string of
    # those digits (the float's shortest form, not its exact binary value 1152921504606846976); from 10^21 on
    # it writes an exponent, which reads back as the same float: kept
    ready, raw = prepare({"a": 3.0, "b": 2.0**60, "c": -1e20, "d": 1e21, "e": -1.5e300,
                          "f": 1.2345678901234568e20})
    assert ready == {"a": 3, "b": "1152921504606847000", "c": "-100000000000000000000", "d": 1e21, "e": -1.5e300,
                     "f": "123456789012345680000"}
    assert raw == (b'{"a":3,"b":"1152921504606847000","c":"-100000000000000000000","d":1e+21,"e":-1.5e+300,'
                   b'"f":"123456789012345680000"}')
    assert canonical(orjson.loads(raw)) == raw
    # the same number written as an integer by the guest comes out the same
    assert prepare({"f": 123456789012345680000})[0] == {"f": "123456789012345680000"}
    for x in (2.0**60, -1e20, 1.2345678901234568e20, 9.999999999999999e20):
        assert float(prepare(x)[0]) == x  # the digits read back as the very float


@settings(max_examples=300, deadline=None)
@given(finite_floats)
def test_prepared_floats_read_back_as_what_was_hashed(x: float) -> None:
    _ready, raw = prepare({"x": x})
    back = orjson.loads(raw)
    assert canonical(back) == raw
    v = back["x"]
    assert type(v) is str or type(v) is float or -MAX_SAFE_INT <= v <= MAX_SAFE_INT


def _no_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(obj: Any) -> bytes:
        raise AssertionError("the pure-Python encoder was used")

    monkeypatch.setattr("agent.codec.canonical.rfc8785.dumps", refuse)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_every_json_value_is_written_without_the_reference_encoder(value: Any) -> None:
    # what JSON carries never reaches the pure-Python encoder (a megabyte of floats took it half a second)
    expected = rfc8785.dumps(value)
    with pytest.MonkeyPatch.context() as mp:
        _no_reference(mp)
        assert canonical(value) == expected
        ready, raw = prepare({"v": value})
    assert raw == rfc8785.dumps(ready)


@settings(max_examples=2000, deadline=None)
@given(finite_floats)
def test_es_number_is_ecmascript(x: float) -> None:
    assert es_number(x).encode() == rfc8785.dumps(x)


@pytest.mark.parametrize("x", [1e-6, 9.999999999999999e-06, 1.5e-6, 2.0**53 + 2, 1e16, 1.2345678901234567e20,
                               1e21 - 65536, 1e21, 1e-7, 5e-324, -1.5e-6, -(2.0**60)])
def test_floats_where_orjson_and_ecmascript_differ(x: float) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _no_reference(mp)
        got = canonical([x, {"é": x, "e": [x]}])
    assert got == rfc8785.dumps([x, {"é": x, "e": [x]}])
