"""Frame checks: JSON, depth, and CloudEvents attributes; nothing but Rejected ever escapes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.receiver import REASONS, Rejected, json_depth, parse_event


def event(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"specversion": "1.0", "id": "e-1", "source": "guest://vm1/app", "type": "io.example.v1",
                          "time": "2026-11-22T01:00:00.123456Z", "subject": "x", "data": {"a": [1, 2]}}
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not ...}


def parse(ev: Any, max_depth: int = 32) -> dict[str, Any]:
    return parse_event(orjson.dumps(ev), max_depth=max_depth)


def test_a_good_event_passes_unchanged() -> None:
    ev = event(hostid="spoofed", sequence="9", traceparent="00-ab", count=3, flag=True, gone=None)
    assert parse(ev) == ev


def test_host_attributes_of_any_type_pass_since_the_host_overwrites_them() -> None:
    ev = event(hostid=5, hostreceivedat=None, sequence=7, hostpeer={"cid": 3}, guestdssematerial=[1])
    assert parse(ev) == ev


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"specversion": ...}, "specversion"),
        ({"id": ""}, "id"),
        ({"id": 5}, "id"),
        ({"source": ...}, "source"),
        ({"type": None}, "type"),
        ({"subject": 1}, "subject"),
        ({"datacontenttype": ["x"]}, "datacontenttype"),
        ({"time": "yesterday"}, "time"),
        ({"time": 1700000000}, "time"),
        ({"data_base64": "AA=="}, "exclusive"),
        ({"data": ..., "data_base64": 5}, "data_base64"),
        ({"Bad-Name": "x"}, "attribute name"),
        ({"ext": 1.5}, "extension attribute"),
        ({"ext": {"nested": 1}}, "extension attribute"),
        ({"ext": 2**60}, "extension attribute"),
    ],
)
def test_attribute_problems(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(Rejected) as info:
        parse(event(**over))
    assert info.value.reason == "attributes"
    assert needle in info.value.detail


@pytest.mark.parametrize("frame", [b"not json", b"[1,2]", b'"str"', b"\xff\xfe", b'{"a":1'])
def test_not_an_object(frame: bytes) -> None:
    with pytest.raises(Rejected) as info:
        parse_event(frame, max_depth=32)
    assert info.value.reason == "json"


def test_depth_limit_counts_data_nesting() -> None:
    deep: Any = 1
    for _ in range(10):
        deep = {"d": deep}
    assert json_depth(deep) == 10
    ok = event(data=deep)  # event object 1 + data 10
    assert parse(ok, max_depth=11) == ok
    with pytest.raises(Rejected) as info:
        parse(ok, max_depth=10)
    assert info.value.reason == "depth"


def test_brackets_inside_strings_do_not_make_an_event_too_deep() -> None:
    ev = event(subject="{" * 100)
    assert parse(ev, max_depth=3) == ev


def test_json_depth_of_scalars_and_lists() -> None:
    assert json_depth(3) == 0
    assert json_depth([]) == 1
    assert json_depth([[[]], {"a": [1]}]) == 3


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_rejected(frame: bytes) -> None:
    try:
        parse_event(frame, max_depth=8)
    except Rejected as r:
        assert r.reason in REASONS


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids,
                                                                                     max_size=3), max_leaves=20)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8))
def test_arbitrary_objects_only_ever_raise_rejected(obj: dict[str, Any]) -> None:
    try:
        parse_event(json.dumps(obj).encode(), max_depth=4)
    except Rejected as r:
        assert r.reason in REASONS
