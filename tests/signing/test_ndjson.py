"""Reading an event file for `verify`: one problem per bad line, and generous about how the file is written."""

from __future__ import annotations

import io

import orjson
import pytest

from agent.model import Reading
from agent.pipeline import SequenceStore, Stamper
from agent.signing.keys import SigningKey, VerifyKey
from agent.signing.ndjson import verify_lines


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def _events(key: SigningKey, n: int) -> list[bytes]:
    stamper = Stamper(key, "h", SequenceStore(None))
    return [stamper.stamp(Reading(probe="lve", subject="net_acct", output={"i": i})).body for i in range(n)]


def _keys(key: SigningKey) -> dict[str, VerifyKey]:
    return {key.keyid: key.verify_key()}


def test_plain_ndjson(key: SigningKey) -> None:
    report = verify_lines(io.BytesIO(b"\n".join(_events(key, 3)) + b"\n\n"), _keys(key))
    assert (report.ok, report.events, report.verified) == (True, 3, 3)


def test_a_byte_order_mark_and_crlf_line_ends_are_read(key: SigningKey) -> None:
    data = b"\xef\xbb\xbf" + b"\r\n".join(_events(key, 3)) + b"\r\n"
    report = verify_lines(io.BytesIO(data), _keys(key))
    assert (report.ok, report.events, report.verified) == (True, 3, 3)


def test_a_json_batch_line_counts_each_event(key: SigningKey) -> None:
    evs = [orjson.loads(b) for b in _events(key, 3)]
    data = orjson.dumps(evs[:2]) + b"\n" + orjson.dumps([evs[2], 7]) + b"\n"
    report = verify_lines(io.BytesIO(data), _keys(key), name="f")
    assert (report.events, report.verified) == (4, 3)
    assert [str(p) for p in report.problems] == ["f:2[1]: not a JSON object"]


def test_a_bad_line_is_one_problem_and_the_rest_still_verify(key: SigningKey) -> None:
    lines = _events(key, 2)
    report = verify_lines(io.BytesIO(lines[0] + b"\nnot json\n" + lines[1] + b"\n"), _keys(key), name="f")
    assert (report.events, report.verified, len(report.problems)) == (3, 2, 1)
    assert str(report.problems[0]).startswith("f:2: not JSON")


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", b"\xef\xbb\xbf\n"])
def test_a_stream_without_events_does_not_pass(data: bytes) -> None:
    report = verify_lines(io.BytesIO(data), _keys(SigningKey.generate()), name="empty.ndjson")
    assert not report.ok and [str(p) for p in report.problems] == ["empty.ndjson: no events to verify"]
    assert report.summary() == "FAILED: 0 events, 0 verified, 1 problem"


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_bounded_lines_splits_as_lines_do_and_skips_what_is_too_long(chunk: int) -> None:
    from agent.signing.ndjson import LongLine, bounded_lines

    data = b"short\n" + b"x" * 25 + b"\nexactly10!\n\n" + b"y" * 11 + b"\nlast"
    got = list(bounded_lines(io.BytesIO(data), limit=10, chunk=chunk))
    assert [(type(g) is LongLine, g.size if isinstance(g, LongLine) else g) for g in got] == [
        (False, b"short"), (True, 25), (False, b"exactly10!"), (False, b""), (True, 11), (False, b"last")]
    assert list(bounded_lines(io.BytesIO(b"a\nb\n"), limit=10, chunk=chunk)) == io.BytesIO(b"a\nb\n").read().split(
        b"\n")[:2]


def test_a_line_too_long_to_be_an_event_is_a_problem_not_read(key: SigningKey) -> None:
    from agent.signing.ndjson import bounded_lines

    good = _events(key, 2)
    limit = max(map(len, good))
    data = good[0] + b"\n" + b"{" + b" " * limit + b"}\n" + good[1] + b"\n"
    report = verify_lines(bounded_lines(io.BytesIO(data), limit=limit), _keys(key))
    assert (report.events, report.verified, len(report.problems)) == (3, 2, 1)
    assert "longer than" in str(report.problems[0]) and ":2" in str(report.problems[0])
