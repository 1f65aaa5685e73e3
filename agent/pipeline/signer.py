"""A signing worker process: guest frames in, host-stamped signed event bodies out.

Started by :class:`~.parallel.ParallelPipeline` as ``python -m agent.pipeline.signer FD`` with one end of a
``socketpair`` as ``FD``. Every message either way is a 4-byte big-endian length and a body whose first byte says
what it is:

parent -> worker
    ``I`` + JSON ``{"host_id", "pem"}``: the host identity and key (PKCS#8 PEM), once, first; answered with ``K``.

    ``J`` + a job: ``>dHI`` (receive time, length of the peer name, N), the peer name (UTF-8), N sequence numbers
    (native ``uint64``), N frame lengths (native ``uint32``), then the N frames as received.

worker -> parent
    ``K``: ready.

    ``R`` + ``>I`` N, N status bytes (0: signed, 1: refused), N lengths (native ``uint32``), then N event bodies
    or refusal texts, in job order.

Jobs are answered in the order they came. The frames were checked by the parent already (that is where their
sequence numbers came from), so the worker parses and stamps them with the numbers and time it was given: an event
is byte for byte what the parent would have made. The worker ends at end of file on its socket; SIGINT and SIGTERM
are left to the parent, which drains its workers before it exits.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
from array import array
from typing import Any

import orjson

from ..codec.exact import loads_exact
from ..model import Event
from ..signing.keys import SigningKey
from .sequence import SequenceStore
from .stamp import Stamper

__all__ = ["JOB_HEADER", "decode_reply", "encode_job", "main"]

_LEN = struct.Struct(">I")
JOB_HEADER = struct.Struct(">dHI")
_COUNT = struct.Struct(">I")


def encode_job(received: float, hostpeer: str, sequences: list[int], frames: list[bytes]) -> bytes:
    """A framed ``J`` message."""
    peer = hostpeer.encode()
    body = b"".join((
        b"J",
        JOB_HEADER.pack(received, len(peer), len(frames)),
        peer,
        array("Q", sequences).tobytes(),
        array("I", map(len, frames)).tobytes(),
        *frames,
    ))
    return _LEN.pack(len(body)) + body


def decode_reply(body: bytes) -> list[bytes | str]:
    """An ``R`` message's results: a body (bytes) or a refusal (str) per frame."""
    (n,) = _COUNT.unpack_from(body, 1)
    flags = body[5 : 5 + n]
    lens = array("I")
    lens.frombytes(body[5 + n : 5 + 5 * n])
    out: list[bytes | str] = []
    pos = 5 + 5 * n
    for flag, size in zip(flags, lens, strict=True):
        chunk = body[pos : pos + size]
        pos += size
        out.append(chunk.decode("utf-8", "replace") if flag else chunk)
    return out


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _job(stamper: Stamper, body: bytes) -> bytes:
    received, peer_len, n = JOB_HEADER.unpack_from(body, 1)
    pos = 1 + JOB_HEADER.size
    hostpeer = body[pos : pos + peer_len].decode()
    pos += peer_len
    seqs = array("Q")
    seqs.frombytes(body[pos : pos + 8 * n])
    pos += 8 * n
    lens = array("I")
    lens.frombytes(body[pos : pos + 4 * n])
    pos += 4 * n
    parsed: list[dict[str, Any]] = []
    numbers: list[int] = []
    results: list[Event | Exception | None] = []
    for size, seq in zip(lens, seqs, strict=True):
        frame = body[pos : pos + size]
        pos += size
        try:
            event = loads_exact(frame)  # integers beyond 64 bits exact, as the receiver parsed them
        except orjson.JSONDecodeError as exc:
            results.append(exc)
            continue
        if not isinstance(event, dict):
            results.append(ValueError("not a JSON object"))
            continue
        parsed.append(event)
        numbers.append(seq)
        results.append(None)
    stamped = iter(stamper.stamp_guests(parsed, hostpeer, received=received, sequences=numbers, owned=True))
    flags = bytearray()
    sizes = array("I")
    chunks: list[bytes] = []
    for r in results:
        result = next(stamped) if r is None else r
        if isinstance(result, Exception):
            chunk = f"cannot stamp: {result}".encode()
            flags.append(1)
        else:
            chunk = result.body
            flags.append(0)
        sizes.append(len(chunk))
        chunks.append(chunk)
    reply = b"".join((b"R", _COUNT.pack(len(results)), bytes(flags), sizes.tobytes(), *chunks))
    return _LEN.pack(len(reply)) + reply


def _init(body: bytes) -> Stamper:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    conf = orjson.loads(body[1:])
    key = load_pem_private_key(conf["pem"].encode(), None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SystemExit("signer: the key is not an Ed25519 key")
    return Stamper(SigningKey(key), conf["host_id"], SequenceStore(None))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m agent.pipeline.signer FD", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(argv[1]))
    try:
        return _serve(sock)
    except ConnectionError:  # the agent went away mid-message: nothing to answer
        return 0


def _serve(sock: socket.socket) -> int:
    stamper: Stamper | None = None
    while True:
        head = _recv_exactly(sock, 4)
        if head is None:
            return 0
        body = _recv_exactly(sock, _LEN.unpack(head)[0])
        if body is None:
            return 0
        kind = body[:1]
        if kind == b"I":
            stamper = _init(body)
            sock.sendall(_LEN.pack(1) + b"K")
        elif kind == b"J" and stamper is not None:
            sock.sendall(_job(stamper, body))
        else:
            print(f"signer: unexpected message {kind!r}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
