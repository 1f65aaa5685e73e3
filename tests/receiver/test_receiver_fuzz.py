"""Hostile bytes on one connection never end the loop or disturb another connection."""

from __future__ import annotations

import asyncio
import logging

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codec.framing import LengthPrefixedDecoder, encode_frame
from agent.config import ListenerOptions
from agent.errors import TransportError
from agent.receiver import MemoryDeliver, Receiver
from agent.transport import MemoryListener, decode_ack


def good(i: int) -> bytes:
    return encode_frame(orjson.dumps({"specversion": "1.0", "id": f"id-{i}", "source": "s", "type": "t"}))


chunk = st.one_of(
    st.binary(max_size=120),
    st.integers(0, 50).map(good),
    st.binary(max_size=64).map(lambda b: encode_frame(b) if b else b"\x00\x00\x00\x00"),
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    st.recursive(st.integers(-(2**63), 2**63 - 1), lambda k: st.lists(k, max_size=2), max_leaves=40).map(
        lambda v: encode_frame(orjson.dumps({"specversion": "1.0", "id": "deep", "source": "s", "type": "t",
                                             "data": v}))),
)


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chunk, max_size=12))
def test_hostile_connection(chunks: list[bytes]) -> None:
    errors = Errors()
    logging.getLogger("agent.receiver").addHandler(errors)

    async def main() -> tuple[MemoryDeliver, Receiver]:
        lst = MemoryListener()
        deliver = MemoryDeliver()
        rx = Receiver(ListenerOptions(uri="memory:rx", max_frame=512, max_depth=8), deliver, listener=lst,
                      drain_timeout=1.0)
        serving = asyncio.ensure_future(rx.serve())
        hostile = await lst.connect("memory:hostile")
        for c in chunks:
            try:
                await hostile.send(c)
            except TransportError:
                break  # the receiver closed it: a bad header
        await hostile.aclose()
        polite = await lst.connect("memory:polite")
        await polite.send(good(999))
        dec, acked = LengthPrefixedDecoder(), 0
        while acked < 1:
            data = await polite.receive()
            assert data, "the polite connection was closed"
            dec.feed(data)
            acked = max([acked, *(decode_ack(f).count for f in dec.frames())])
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        return deliver, rx

    try:
        deliver, rx = asyncio.run(asyncio.wait_for(main(), 10))
    finally:
        logging.getLogger("agent.receiver").removeHandler(errors)
    assert ("id-999", "memory:polite") in [(e["id"], p) for e, p in deliver.got]
    assert rx.stats.connections == 2
    assert errors.records == []
