"""Length-prefixed framing: round trips under any split, and hostile prefixes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec.framing import DEFAULT_MAX_FRAME, LengthPrefixedDecoder, encode_frame, encode_frames
from agent.errors import FramingError, TransportError

payloads = st.lists(st.binary(min_size=1, max_size=300), max_size=20)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def decode_chunks(chunks: list[bytes], max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    dec = LengthPrefixedDecoder(max_frame)
    got: list[bytes] = []
    for c in chunks:
        dec.feed(c)
        got.extend(dec.frames())
    assert dec.at_boundary()
    return got


@given(payloads, st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_back_the_frames(frames: list[bytes], cuts: list[int]) -> None:
    wire = encode_frames(frames)
    assert decode_chunks(split_at(wire, cuts)) == frames


@given(payloads)
def test_byte_by_byte(frames: list[bytes]) -> None:
    wire = encode_frames(frames)
    assert decode_chunks([wire[i : i + 1] for i in range(len(wire))]) == frames


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=512), st.integers(min_value=1, max_value=64))
def test_garbage_only_ever_yields_frames_or_framing_error(garbage: bytes, max_frame: int, step: int) -> None:
    dec = LengthPrefixedDecoder(max_frame)
    try:
        for i in range(0, len(garbage), step):
            dec.feed(garbage[i : i + step])
            for f in dec.frames():
                assert 1 <= len(f) <= max_frame
            # what is left is less than one whole frame with its header
            assert dec.buffered < max_frame + 4
    except FramingError:
        assert dec.broken
        with pytest.raises(FramingError):
            dec.feed(b"x")


@given(st.integers(min_value=DEFAULT_MAX_FRAME + 1, max_value=2**32 - 1), st.binary(max_size=64))
def test_huge_prefix_fails_on_the_header_alone(n: int, tail: bytes) -> None:
    dec = LengthPrefixedDecoder()
    dec.feed(struct.pack(">I", n)[:3])
    assert dec.next_frame() is None
    dec.feed(struct.pack(">I", n)[3:])
    with pytest.raises(FramingError, match="exceeds"):
        dec.next_frame()
    assert dec.buffered == 0
    with pytest.raises(FramingError):
        dec.feed(tail)


def test_zero_length_is_an_error() -> None:
    dec = LengthPrefixedDecoder()
    dec.feed(b"\x00\x00\x00\x00rest")
    with pytest.raises(FramingError, match="empty"):
        dec.next_frame()


def test_frames_before_a_bad_header_are_kept_on_the_error() -> None:
    dec = LengthPrefixedDecoder(max_frame=8)
    dec.feed(encode_frame(b"one") + encode_frame(b"two") + struct.pack(">I", 9) + b"x" * 9)
    with pytest.raises(FramingError) as info:
        dec.frames()
    assert info.value.frames == [b"one", b"two"]  # type: ignore[attr-defined]


def test_exactly_max_is_accepted_and_one_more_is_not() -> None:
    dec = LengthPrefixedDecoder(max_frame=5)
    dec.feed(encode_frame(b"12345", 5))
    assert dec.frames() == [b"12345"]
    with pytest.raises(FramingError):
        encode_frame(b"123456", 5)
    with pytest.raises(FramingError):
        encode_frame(b"")


def test_partial_frame_is_not_at_boundary() -> None:
    dec = LengthPrefixedDecoder()
    dec.feed(encode_frame(b"abcdef")[:-1])
    assert dec.next_frame() is None
    assert not dec.at_boundary()


def test_framing_error_is_a_transport_error() -> None:
    assert issubclass(FramingError, TransportError)


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_max_frame_must_be_representable(bad: int) -> None:
    with pytest.raises(ValueError):
        LengthPrefixedDecoder(bad)
