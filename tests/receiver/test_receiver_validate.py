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


def test_more_attributes_than_max_attributes_are_refused_by_count() -> None:
    many = event(**{f"x{i}": i for i in range(993)})  # 7 + 993 = 1000: the default limit, passed
    assert parse(many) == many
    with pytest.raises(Rejected) as e:
        parse(event(**{f"x{i}": i for i in range(994)}))
    assert e.value.reason == "attributes" and e.value.detail == "1001 attributes, more than max_attributes (1000)"
    with pytest.raises(Rejected, match=r"8 attributes, more than max_attributes \(7\)"):
        parse_event(orjson.dumps(event(extra=1)), max_depth=32, max_attributes=7)
    assert parse_event(orjson.dumps(event()), max_depth=32, max_attributes=7) == event()


def test_standard_base64_data_passes() -> None:
    for text in ("", "AA==", "+/8=", "aGVsbG8gd29ybGQ=", "aGk=", "aGVsbG8h"):
        ev = event(data=..., data_base64=text)
        assert parse(ev) == ev


def test_host_attributes_of_any_type_pass_since_the_host_overwrites_them() -> None:
    ev = event(hostid=5, hostreceivedat=None, sequence=7, hostpeer={"cid": 3}, guestdssematerial=[1],
               guesthostid=[2], guestsequence={"x": 1})
    assert parse(ev) == ev


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(("name", "value"), [("hostid", 5.5), ("hostreceivedat", {"at": 1}), ("sequence", [7]),
                                             ("hostpeer", "vsock:3\n"), ("sequence", 2**53)])
def test_a_signed_events_own_host_attributes_are_checked_since_the_host_keeps_them(
        name: str, value: Any, native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest that signed its event keeps its values of the host's attributes (as guest<name>): they must be
    attribute values CloudEvents can carry. An unsigned event's are overwritten, whatever they are."""
    from agent.receiver import validate

    if not native:
        monkeypatch.setattr(validate, "_passes", None)
    elif validate._passes is None:
        pytest.skip("the native check is not built here")
    with pytest.raises(Rejected) as r:
        parse(event(**{name: value}, dssematerial="ZW52"))
    assert r.value.reason == "attributes" and name in r.value.detail
    assert parse(event(**{name: value})) == event(**{name: value})
    assert parse(event(**{name: "ok"}, dssematerial="ZW52"))["dssematerial"] == "ZW52"


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
        ({"time": "2026-01-01 10:00:00Z"}, "a T between date and time, not a space"),
        ({"data_base64": "AA=="}, "exclusive"),
        ({"data": ..., "data_base64": 5}, "data_base64"),
        ({"Bad-Name": "x"}, "attribute name"),
        ({"ext": 1.5}, "extension attribute ext is a number written with a fraction or an exponent"),
        ({"ext": 2.0}, "extension attribute ext is a number written with a fraction or an exponent"),
        ({"ext": 2.0**70}, "extension attribute ext is an integer beyond ±(2^53-1)"),
        ({"specversion": "1" * 300}, "got '" + "1" * 39 + "…"),
        ({"ext": {"nested": 1}}, "extension attribute"),
        ({"ext": 2**60}, "send it as a string"),
        ({"subject": ""}, "subject must be a non-empty string"),
        ({"datacontenttype": ""}, "datacontenttype must be a non-empty string"),
        ({"dataschema": ""}, "dataschema must be a non-empty string"),
        ({"data": ..., "data_base64": "-_8="}, "data_base64 is not base64"),
        ({"data": ..., "data_base64": "AAA"}, "data_base64 is not base64"),
        ({"data": ..., "data_base64": "A A=="}, "data_base64 is not base64"),
        ({"data": ..., "data_base64": "aGl="}, "the padding bits zero"),  # "hi" is aGk=
        ({"data": ..., "data_base64": "AB=="}, "the padding bits zero"),  # b"\x00" is AA==
        ({"e" * 65: 1}, "is 65 characters long (at most 64)"),
        ({"E" * 65: 1}, "is not lower-case letters and digits"),
    ],
)
def test_attribute_problems(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(Rejected) as info:
        parse(event(**over))
    assert info.value.reason == "attributes"
    assert needle in info.value.detail


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(("name", "value", "char"), [
    ("id", "evil\nOK: 1 events", "000A"), ("source", "guest://vm/\x1b[1Aapp", "001B"), ("type", "t\x00", "0000"),
    ("subject", "x\x7f", "007F"), ("datacontenttype", "application/json\r", "000D"), ("dataschema", "s\x85", "0085"),
    ("region", "eu\ufdd0", "FDD0"), ("region", "eu\U0010fffe", "10FFFE"),
])
def test_characters_cloudevents_strings_exclude_are_refused(name: str, value: str, char: str, native: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Control characters and noncharacters (the spec's String type excludes them): an id with a newline or an
    escape sequence would forge lines wherever it is printed."""
    from agent.receiver import validate

    if not native:
        monkeypatch.setattr(validate, "_passes", None)
    with pytest.raises(Rejected) as info:
        parse(event(**{name: value}))
    assert info.value.reason == "attributes" and f"{name} holds U+{char}" in info.value.detail
    fine = value.replace(chr(int(char, 16)), "é")
    assert parse(event(**{name: fine}))[name] == fine


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


_native_passes = pytest.importorskip("agent._native").check_passes
_attr_names = st.one_of(st.sampled_from(["specversion", "id", "source", "type", "time", "subject", "dataschema",
                                         "datacontenttype", "data", "data_base64", "hostid", "sequence", "region",
                                         "dssematerial", "dssematerial", "guesthostid", "hostpeer",
                                         "x" * 64, "x" * 65, "Upper", "a_b", "é", ""]),
                        st.text(max_size=6))
_attr_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=4),
                         st.sampled_from(["1.0", "2026-11-22T02:00:00Z", "2026-11-22t02:00:00.5+01:00",
                                          "2026-11-22 02:00:00.Z", "2026-11-22T02:00:00-0100", "2026-11-22T02:00:00Z\n",
                                          "２０２６-11-22T02:00:00Z", 2**53 - 1, 2**53, -(2**53) + 1, -(2**53)]),
                         st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                             max_size=2))


@pytest.mark.skipif(_native_passes is None, reason="the native check is not built here")
@given(st.dictionaries(_attr_names, _attr_values, max_size=8), st.booleans())
def test_the_native_check_passes_only_what_the_python_checks_pass(extra: dict[str, Any], base: bool) -> None:
    from agent.receiver import validate

    event = ({"specversion": "1.0", "id": "a", "source": "s", "type": "t"} if base else {}) | extra
    assert _native_passes is not None
    if not _native_passes(event):
        return
    python_only, validate._passes = validate._passes, None
    try:
        validate.check_attributes(event)  # raises Rejected if the native check was wrong
    finally:
        validate._passes = python_only


@pytest.mark.skipif(_native_passes is None, reason="the native check is not built here")
def test_the_native_check_passes_ordinary_events() -> None:
    assert _native_passes is not None
    ok = {"specversion": "1.0", "id": "a", "source": "s", "type": "t", "time": "2026-11-22T02:00:00.123+01:00",
          "subject": "x", "datacontenttype": "application/json", "region": "eu", "attempt": 2**53 - 1, "flag": True,
          "hostid": {"any": "thing"}, "data": [1.5], "traceparent": None}
    assert _native_passes(ok)
    for bad in ({"attempt": 2**53}, {"Region": "eu"}, {"time": "2026-11-22T02:00:00"}, {"subject": 1},
                {"data_base64": "aGk="}, {"id": ""}, {"specversion": "1.1"}):
        assert not _native_passes(ok | bad)


@pytest.mark.skipif(_native_passes is None, reason="the native check is not built here")
@given(st.recursive(st.integers(), lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                          st.dictionaries(st.text(max_size=2), kids, max_size=3)),
                    max_leaves=20), st.integers(0, 200))
def test_the_native_depth_check_agrees_with_json_depth(data: Any, max_depth: int) -> None:
    event = {"specversion": "1.0", "id": "a", "source": "s", "type": "t", "data": data}
    assert _native_passes is not None
    assert _native_passes(event, max_depth) == (json_depth(event) <= max_depth)


@pytest.mark.skipif(_native_passes is None, reason="the native check is not built here")
def test_deep_events_are_left_to_the_python_count() -> None:
    assert _native_passes is not None
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    event = {"specversion": "1.0", "id": "a", "source": "s", "type": "t", "data": deep}
    assert not _native_passes(event, 10_000)  # beyond what the native walk goes: Python's
    assert parse_event(orjson.dumps(event), max_depth=10_000)["data"] == deep
    with pytest.raises(Rejected) as exc:
        parse_event(orjson.dumps(event), max_depth=150)
    assert exc.value.reason == "depth"


_BIG = (b'{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"a":18446744073709551617,'
        b'"b":-9223372036854775809,"c":[123456789012345678901234567890],"d":1e20,"e":1.8446744073709552e19,'
        b'"f":18446744073709551615,"g":5,"h":1' + b"0" * 400 + b',"i":-1' + b"0" * 309 + b'}}')
_BIG_DATA = {"a": 18446744073709551617, "b": -9223372036854775809, "c": [123456789012345678901234567890],
             "d": 1e20, "e": 1.8446744073709552e19, "f": 18446744073709551615, "g": 5, "h": 10**400,
             "i": -(10**309)}


@pytest.mark.parametrize("native", [True, False])
def test_integers_beyond_64_bits_are_parsed_exactly(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.receiver import validate

    if not native:
        monkeypatch.setattr(validate, "_passes", None)
    elif validate._passes is None:
        pytest.skip("the native check is not built here")
    got = parse_event(_BIG, max_depth=32)
    assert got["data"] == _BIG_DATA
    assert [type(got["data"][k]) for k in "abdef"] == [int, int, float, float, int]


def test_integers_beyond_64_bits_reach_the_event_as_their_exact_digits() -> None:
    from agent.pipeline import SequenceStore, Stamper
    from agent.signing.event import verify_event
    from agent.signing.keys import SigningKey

    key = SigningKey.generate()
    (out,) = Stamper(key, "h", SequenceStore(None)).stamp_guests([parse_event(_BIG, max_depth=32)], "unix:uid=0,pid=1")
    assert not isinstance(out, Exception)
    doc = orjson.loads(out.body)
    assert doc["data"] == {"a": "18446744073709551617", "b": "-9223372036854775809",
                           "c": ["123456789012345678901234567890"], "d": "100000000000000000000",
                           "e": "18446744073709552000", "f": "18446744073709551615", "g": 5,
                           "h": "1" + "0" * 400, "i": "-1" + "0" * 309}
    verify_event(doc, {key.keyid: key.verify_key()})


@pytest.mark.skipif(_native_passes is None, reason="the native check is not built here")
def test_the_native_check_leaves_floats_that_may_be_rounded_integers_to_python() -> None:
    assert _native_passes is not None
    base = {"specversion": "1.0", "id": "a", "source": "s", "type": "t"}
    for x in (2.0**64, 1e300, -(2.0**63), -1e20):
        assert not _native_passes(dict(base, data={"x": [x]}), 32)
    for x in (2.0**64 * (1 - 2**-53), 1e19, -(2.0**63) * (1 - 2**-53), 0.5):
        assert _native_passes(dict(base, data={"x": [x]}), 32)


def test_nesting_deeper_than_the_parser_goes_is_a_depth_refusal() -> None:
    frame = b'{"specversion":"1.0","id":"a","source":"s","type":"t","data":' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(Rejected) as exc:
        parse_event(frame, max_depth=32)
    assert exc.value.reason == "depth"


@pytest.mark.parametrize(("workers", "threads", "with_frames"), [(0, 0, True), (2, 0, True), (2, 0, False),
                                                                  (0, 1, True)])
def test_every_pipeline_carries_integers_beyond_64_bits_exactly(workers: int, threads: int,
                                                                 with_frames: bool) -> None:
    import asyncio

    from agent import _native
    from agent.pipeline import PipelineStats, SequenceStore, SinkQueue, Stamper
    from agent.pipeline.parallel import build_pipeline
    from agent.signing.keys import SigningKey

    if threads and _native.Signer is None:
        pytest.skip("signing threads need the native signer")

    async def main() -> dict[str, Any]:
        q = SinkQueue(10)
        pipeline = build_pipeline(Stamper(SigningKey.generate(), "h", SequenceStore(None)), [q], PipelineStats(),
                                  workers, threads)
        await pipeline.start()
        try:
            event = parse_event(_BIG, max_depth=32)
            await pipeline.submit_guests([event], "unix:uid=0,pid=1", [_BIG] if with_frames else None)
            async with asyncio.timeout(20):
                (got, _receipt), = await q.get_batch(10)  # in the queue: stamped, signed, not refused
            return orjson.loads(got.body)["data"]  # type: ignore[no-any-return]
        finally:
            await pipeline.aclose(1.0)
            pipeline.close()

    data = asyncio.run(main())
    assert data["a"] == "18446744073709551617" and data["b"] == "-9223372036854775809"
    assert data["c"] == ["123456789012345678901234567890"]
    assert data["h"] == "1" + "0" * 400 and data["i"] == "-1" + "0" * 309  # beyond even a double


@pytest.mark.parametrize("value", [b"1e400", b"-1e309", b"1" + b"0" * 400 + b".0", b"NaN", b"Infinity",
                                   b'"\\ud800"'])
def test_what_is_not_json_or_not_finite_is_still_refused_beside_a_huge_integer(value: bytes) -> None:
    frame = (b'{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"n":1' + b"0" * 400
             + b',"x":' + value + b"}}")
    with pytest.raises(Rejected) as exc:
        parse_event(frame, max_depth=32)
    assert exc.value.reason == "json"


def test_nats_binary_payloads_keep_integers_beyond_64_bits_exact() -> None:
    from agent.codec.nats import from_binary

    ev = from_binary({"ce-specversion": "1.0", "ce-id": "a", "ce-source": "s", "ce-type": "t",
                      "ce-datacontenttype": "application/json"}, b'{"n":18446744073709551617,"f":1e20,"h":1'
                     + b"0" * 400 + b"}")
    assert ev["data"] == {"n": 18446744073709551617, "f": 1e20, "h": 10**400} and type(ev["data"]["f"]) is float


def test_nesting_too_deep_beside_a_huge_integer_is_a_depth_refusal() -> None:
    frame = (b'{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"n":1' + b"0" * 400
             + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}}")
    with pytest.raises(Rejected) as exc:
        parse_event(frame, max_depth=32)
    assert exc.value.reason == "depth"


def test_an_integer_longer_than_python_reads_is_refused_for_what_it_is() -> None:
    """4,300 digits are read exactly (Python's bound on reading an integer, whose cost is quadratic); one more is
    refused saying so, not as an infinite double."""
    head = b'{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"n":'
    assert parse_event(head + b"9" * 4300 + b"}}", max_depth=32)["data"]["n"] == 10**4300 - 1
    with pytest.raises(Rejected) as exc:
        parse_event(head + b"9" * 4301 + b"}}", max_depth=32)
    assert exc.value.reason == "json" and "more than 4300 digits" in exc.value.detail
    assert "infinity" not in exc.value.detail


@pytest.mark.parametrize(("frame", "reason", "said"), [
    (b'{"id":"a","source":"s","type":"t"}', "attributes", 'specversion is missing (it must be "1.0")'),
    (b'{"specversion":"1.0","id":"a\xff\xfe","source":"s","type":"t"}', "json",
     "not valid UTF-8 (byte 0xff at offset 28)"),
    (b'{"specversion":"1.0","id":"\xc3","source":"s","type":"t"}', "json", "not valid UTF-8 (byte 0xc3 at offset 27)"),
])
def test_refusals_say_what_is_wrong_in_the_events_terms(frame: bytes, reason: str, said: str) -> None:
    with pytest.raises(Rejected) as r:
        parse_event(frame, max_depth=32)
    assert (r.value.reason, r.value.detail) == (reason, said)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(("name", "value"), [("dssematerial", 5), ("signedextattrs", 7), ("dssematerial", True),
                                             ("signedextattrs", ["a"])])
def test_signature_material_that_is_not_a_string_is_refused(name: str, value: Any, native: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the guest-signature policy: the verifiability extension's attributes are strings, and the host
    would carry them on (as guestdssematerial, guestsignedextattrs)."""
    from agent.receiver import validate

    if not native:
        monkeypatch.setattr(validate, "_passes", None)
    elif validate._passes is None:
        pytest.skip("the native check is not built here")
    with pytest.raises(Rejected) as r:
        parse(event(**{name: value}))
    assert r.value.reason == "attributes" and f"{name} must be a string" in r.value.detail
    assert parse(event(**{name: "ZW52"}))[name] == "ZW52"
    assert parse(event(**{name: None}))[name] is None


@pytest.mark.parametrize("native", [True, False])
def test_an_empty_dssematerial_is_no_signature_so_the_host_attributes_are_not_checked(
        native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the pipeline has it: an empty ``dssematerial`` keeps no guest values, so they are no reason to refuse."""
    from agent.receiver import validate

    if not native:
        monkeypatch.setattr(validate, "_passes", None)
    elif validate._passes is None:
        pytest.skip("the native check is not built here")
    ev = event(hostid=1.5, sequence={"x": 1}, dssematerial="")
    assert parse(ev) == ev


@pytest.mark.parametrize(("frame_value", "said"), [
    (b"100000000000000000000000000000", "is an integer beyond"),  # read as a rounded float
    (b"18446744073709551616", "is an integer beyond"),
    (b"1.5", "is a number written with a fraction or an exponent"),
    (b"2.0", "is a number written with a fraction or an exponent"),  # small: not an integer's problem
    (b"2e0", "is a number written with a fraction or an exponent"),
    (b"1e20", "is an integer beyond"),
])
def test_numbers_no_attribute_can_carry_are_named_for_what_they_are(frame_value: bytes, said: str) -> None:
    frame = b'{"specversion":"1.0","id":"a","source":"s","type":"t","count":' + frame_value + b"}"
    with pytest.raises(Rejected) as r:
        parse_event(frame, max_depth=32)
    assert r.value.reason == "attributes" and said in r.value.detail, r.value.detail
