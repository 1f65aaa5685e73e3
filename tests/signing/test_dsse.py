"""DSSE envelope reading: the sliced reading of encode_envelope's layout, and strict base64 first."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import VerifyError
from agent.signing import dsse
from agent.signing.dsse import PAYLOAD_TYPE, b64d, encode_envelope, envelope_parts, parse_envelope
from tests.signing.reference import reference_b64d

KEYID = "3d1219c7c4c5404aaa1f6d2a48adfda43d1219c7c4c5404aaa1f6d2a48adfda4"


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except VerifyError as exc:
        return "refused", str(exc)


def test_the_layout_of_encode_envelope_is_read_by_slicing(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = encode_envelope(PAYLOAD_TYPE, bytes(range(32)), KEYID, bytes(range(64)))
    expected = (PAYLOAD_TYPE, bytes(range(32)), [(KEYID, bytes(range(64)))])
    assert dsse._parsed_parts(raw) == expected

    def no_parser(raw: bytes) -> Any:
        raise AssertionError("the parser was used")

    monkeypatch.setattr(dsse, "_parsed_parts", no_parser)
    assert envelope_parts(raw) == expected


def test_parse_envelope_is_the_same_reading() -> None:
    raw = encode_envelope(PAYLOAD_TYPE, bytes(32), KEYID, bytes(64))
    env = parse_envelope(raw)
    assert (env.payload_type, env.payload, [(s.keyid, s.sig) for s in env.signatures]) == envelope_parts(raw)


@pytest.mark.parametrize("keyid", [
    "\\u0033" + KEYID[6:],  # an escape: the parser reads "3"
    '\\"' + KEYID[2:],
    "\\n" + KEYID[2:],
    "\\\\" + KEYID[2:],
    "\u00e9" + KEYID[2:],  # two UTF-8 bytes: still 64 bytes
    KEYID.upper(),
    "-" + KEYID[1:],
    " " * 64,
])
def test_key_ids_a_parser_reads_otherwise_take_the_parser(keyid: str) -> None:
    raw = encode_envelope(PAYLOAD_TYPE, bytes(32), KEYID, bytes(64)).replace(KEYID.encode(), keyid.encode())
    assert len(raw) == dsse._T_LEN
    assert _outcome(envelope_parts, raw) == _outcome(dsse._parsed_parts, raw)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, dsse._T_LEN - 1), st.sampled_from(b'"\\=+/-_ Aa0\n\x00\xe9{}[],:u')),
                min_size=1, max_size=3))
def test_changed_bytes_get_the_parser_answer(edits: list[tuple[int, int]]) -> None:
    raw = bytearray(encode_envelope(PAYLOAD_TYPE, bytes(range(32)), KEYID, bytes(range(64))))
    for pos, value in edits:
        raw[pos] = value
    assert _outcome(envelope_parts, bytes(raw)) == _outcome(dsse._parsed_parts, bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.text(min_size=64, max_size=64), st.binary(min_size=64, max_size=64))
def test_generated_envelopes_get_the_parser_answer(payload: bytes, keyid: str, sig: bytes) -> None:
    raw = encode_envelope(PAYLOAD_TYPE, payload, keyid, sig)
    assert _outcome(envelope_parts, raw) == _outcome(dsse._parsed_parts, raw) == (
        "ok", (PAYLOAD_TYPE, payload, [(keyid, sig)]))


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(st.sampled_from("AQgw+/=-_ \n\u00e9"), max_size=14),
                 st.binary(max_size=14).map(lambda b: base64.b64encode(b).decode())))
def test_b64d_answers_as_without_its_shortcut(text: str) -> None:
    assert _outcome(b64d, text, "x") == _outcome(reference_b64d, text, "x")


@pytest.mark.parametrize("text", ["QUJD=", "QUJD==", "QQ", "QQ=", "QQ===", "=QQ=", "Q", "", "QUI=", "QU I=",
                                  "QUI=QUI=", "-_-_", "Pz8_", "Pz8/", b"QUJD", 5, None])
def test_b64d_edge_cases(text: Any) -> None:
    assert _outcome(b64d, text, "x") == _outcome(reference_b64d, text, "x")


def test_parser_messages() -> None:
    for raw, message in [(b"nope", "not a JSON DSSE envelope"), (b"[]", "not a JSON object"),
                         (b"{}", "no payloadType"),
                         (orjson.dumps({"payloadType": "t", "payload": ""}), "no signatures"),
                         (orjson.dumps({"payloadType": "t", "payload": "", "signatures": [1]}), "not an object"),
                         (orjson.dumps({"payloadType": "t", "payload": "", "signatures": [{"keyid": 1}]}),
                          "keyid is not a string")]:
        with pytest.raises(VerifyError, match=message):
            envelope_parts(raw)
