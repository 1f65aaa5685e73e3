"""Newline-delimited framing: any split, CRLF, blank lines, endless lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.codec.framing import NewlineDecoder, encode_line, encode_lines
from agent.errors import FramingError

lines = st.lists(st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" not in b and not b.endswith(b"\r")),
                 max_size=20)


@given(lines, st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_gives_back_the_lines(payloads: list[bytes], cuts: list[int]) -> None:
    wire = encode_lines(payloads)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    dec = NewlineDecoder()
    got: list[bytes] = []
    prev = 0
    for p in [*points, len(wire)]:
        dec.feed(wire[prev:p])
        prev = p
        got.extend(dec.frames())
    assert got == payloads
    assert dec.at_boundary()


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=300))
def test_garbage_never_buffers_past_the_limit(garbage: bytes, max_frame: int) -> None:
    dec = NewlineDecoder(max_frame)
    try:
        for i in range(0, len(garbage), 7):
            dec.feed(garbage[i : i + 7])
            for f in dec.frames():
                assert 0 < len(f) <= max_frame
            assert dec.buffered <= max_frame + 1
    except FramingError:
        assert dec.broken


def test_crlf_and_blank_lines() -> None:
    dec = NewlineDecoder()
    dec.feed(b'{"a":1}\r\n\n\r\n{"b":2}\n{"c"')
    assert dec.frames() == [b'{"a":1}', b'{"b":2}']
    assert not dec.at_boundary()


def test_endless_line_fails_before_its_end() -> None:
    dec = NewlineDecoder(max_frame=10)
    dec.feed(b"x" * 8)
    assert dec.next_frame() is None
    dec.feed(b"x" * 8)
    with pytest.raises(FramingError, match="exceeds"):
        dec.next_frame()
    assert dec.buffered == 0


def test_line_at_the_limit_with_cr() -> None:
    dec = NewlineDecoder(max_frame=3)
    dec.feed(b"abc\r\nabcd\n")
    assert dec.next_frame() == b"abc"
    with pytest.raises(FramingError):
        dec.next_frame()


@pytest.mark.parametrize("bad", [b"", b"a\nb", b"x" * 11])
def test_encode_refuses(bad: bytes) -> None:
    with pytest.raises(FramingError):
        encode_line(bad, max_frame=10)


def test_keep_blank_hands_out_empty_lines() -> None:
    dec = NewlineDecoder(keep_blank=True)
    dec.feed(b"a\n\r\n\nb\n")
    assert dec.frames() == [b"a", b"", b"", b"b"]
