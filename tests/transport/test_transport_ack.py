"""Ack frames and the upstream outbox: nothing is settled twice, lost, or reordered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import FramingError
from agent.transport import Ack, Outbox, decode_ack, encode_ack


def test_ack_round_trip() -> None:
    for ack in (Ack(0), Ack(7), Ack(9, ((3, "attributes: id missing"), (9, "json: bad")))):
        assert decode_ack(encode_ack(ack)) == ack
    assert encode_ack(Ack(5)) == b'{"ack":5}'


def test_ack_ignores_unknown_keys() -> None:
    assert decode_ack(b'{"ack":3,"future":true}') == Ack(3)


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b'{"ack":-1}', b'{"ack":true}', b'{"ack":"3"}', b'{"ack":1,"rejected":[[1]]}',
     b'{"ack":1,"rejected":[["1","x"]]}', b'{"ack":1,"rejected":{}}', b"\xff"],
)
def test_bad_ack_is_a_framing_error(raw: bytes) -> None:
    with pytest.raises(FramingError):
        decode_ack(raw)


def test_settle_refuses_acks_outside_the_window() -> None:
    box: Outbox[int] = Outbox()
    box.add(range(5))
    assert box.take_unsent(3) == [0, 1, 2]
    with pytest.raises(FramingError):
        box.settle(Ack(4))
    assert box.settle(Ack(2)) == ([0, 1], [])
    with pytest.raises(FramingError):
        box.settle(Ack(1))


def test_reconnect_resends_from_the_first_unsettled() -> None:
    box: Outbox[str] = Outbox()
    box.add("abcde")
    assert box.take_unsent(10) == list("abcde")
    assert box.settle(Ack(2, ((2, "bad"),))) == (["a"], [("b", "bad")])
    box.reconnected()
    assert box.in_flight == 0
    assert box.take_unsent(2) == ["c", "d"]
    assert box.settle(Ack(1)) == (["c"], [])
    assert len(box) == 2


def test_refusals_ahead_of_the_cumulative_ack() -> None:
    box: Outbox[str] = Outbox()
    box.add("abcd")
    assert box.take_unsent(10) == list("abcd")
    # frame 3 refused while 1 and 2 are still open
    assert box.settle(Ack(0, ((3, "dropped: full"),))) == ([], [("c", "dropped: full")])
    assert len(box) == 3 and box.in_flight == 3
    assert box.settle(Ack(3, ((3, "dropped: full"),))) == (["a", "b"], [])  # a repeated notice changes nothing
    box.reconnected()
    assert box.take_unsent(10) == ["d"]  # the refused item is never sent again
    with pytest.raises(FramingError):
        box.settle(Ack(0, ((2, "x"),)))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5)),
        st.tuples(st.just("take"), st.integers(0, 6)),
        st.tuples(st.just("ack"), st.integers(0, 6)),
        st.tuples(st.just("early"), st.integers(1, 6)),
        st.tuples(st.just("reconnect"), st.just(0)),
    ),
    max_size=60,
)


@given(ops)
def test_outbox_settles_each_item_once(program: list[tuple[str, int]]) -> None:
    box: Outbox[int] = Outbox()
    added = 0
    settled: list[int] = []
    acked_on_conn = 0
    on_conn: list[int] = []  # frame k of this connection carried on_conn[k - 1]
    early: set[int] = set()
    for op, n in program:
        if op == "add":
            box.add(range(added, added + n))
            added += n
        elif op == "take":
            on_conn.extend(box.take_unsent(n))
        elif op == "ack":
            upto = acked_on_conn + min(n, len(on_conn) - acked_on_conn)
            done, refused = box.settle(Ack(upto, ((upto, "r"),) if upto > acked_on_conn and n % 2 else ()))
            settled.extend(done + [i for i, _ in refused])
            acked_on_conn = upto
        elif op == "early" and acked_on_conn + n <= len(on_conn):
            k = acked_on_conn + n
            done, refused = box.settle(Ack(acked_on_conn, ((k, "early"),)))
            assert done == []
            assert refused == ([] if on_conn[k - 1] in early else [(on_conn[k - 1], "early")])
            early.add(on_conn[k - 1])
            settled.extend(i for i, _ in refused)
        elif op == "reconnect":
            box.reconnected()
            acked_on_conn = 0
            on_conn = []
    assert len(settled) == len(set(settled))  # nothing settled twice
    assert len(box) == added - len(settled)
    box.reconnected()
    rest = box.take_unsent(10**6)
    assert sorted(rest + settled) == list(range(added))  # nothing lost
    assert rest == sorted(rest)  # what is left goes out in order


def test_acks_of_many_refusals_never_count_past_one_a_later_ack_reports() -> None:
    from agent.transport.ack import MAX_REJECTED, ack_payloads

    rejected = [(n, "dropped: full") for n in range(11, 151)]  # 140 refusals: three ack frames
    acks = [decode_ack(p) for p in ack_payloads(200, rejected)]
    assert [len(a.rejected) for a in acks] == [MAX_REJECTED, MAX_REJECTED, 12]
    assert [a.count for a in acks] == [74, 138, 200]  # each stops before what only a later one reports
    assert [n for a in acks for n, _r in a.rejected] == list(range(11, 151))
    assert [decode_ack(p) for p in ack_payloads(7, [])] == [Ack(7)]
