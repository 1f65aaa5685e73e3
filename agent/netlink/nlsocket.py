"""One thin asyncio netlink socket with many requests in flight.

:class:`NetlinkSocket` owns a non-blocking ``AF_NETLINK`` datagram socket and an
event-loop reader. Every request gets a sequence number; replies are matched
back by that number, so hundreds of requests can be outstanding at once. A
request is complete on ``NLMSG_ERROR`` (an error, or an ack when ``NLM_F_ACK``
was asked for), on ``NLMSG_DONE`` (end of a multipart dump), or on its first
reply when neither ack nor dump was asked for. :meth:`NetlinkSocket.transact`
sends a whole batch, a window at a time, with one ``send`` per window: the
kernel handles every request of a datagram in turn.

Messages no request is waiting for (taskstats exit notifications) go to the
``unsolicited`` callback. A receive-queue overrun (``ENOBUFS``) is counted;
on a socket that is waiting for replies it fails the outstanding requests, as
their replies may be gone.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import ParseError, ProbeError
from .codec import (
    NLM_F_ACK,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDR,
    Message,
    NetlinkError,
    align,
    ext_ack_message,
)

__all__ = ["NETLINK_GENERIC", "NetlinkSocket", "Reply"]

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
SO_RCVBUFFORCE = 33

#: what a request of :meth:`NetlinkSocket.transact` ends as: its reply messages, or the error it got
Reply = list[Message] | ProbeError
T = TypeVar("T")

_RECV_SIZE = 65536
_SEQ_MASK = 0xFFFFFFFF
_FLAGS = struct.Struct("=H")
_SEQ = struct.Struct("=I")
_I32 = struct.Struct("=i")
#: marks a pending request that expects only an ack (kept beside the 16 bits of nlmsg flags)
_ACK_ONLY = 1 << 16


class _Batch:
    """Bookkeeping of one batch of requests.

    Without ``decode`` each reply is a list of messages; with it, the first
    reply message of each request, decoded, is its reply.
    """

    __slots__ = ("decode", "future", "left", "replies")

    def __init__(self, n: int, future: asyncio.Future[list[Any]], decode: Callable[[bytes, int, int], Any] | None,
                 ) -> None:
        self.replies: list[Any] = [[] for _ in range(n)] if decode is None else [None] * n
        self.left = n
        self.future = future
        self.decode = decode

    def finish(self) -> None:
        if self.decode is not None:
            for i, r in enumerate(self.replies):
                if r is None:
                    self.replies[i] = NetlinkError(errno.ENODATA, "no reply message")
        if not self.future.done():
            self.future.set_result(self.replies)


class NetlinkSocket:
    """A netlink socket bound to an automatically chosen port id.

    ``window`` bounds the requests in flight: their replies must fit in the
    receive buffer (``rcvbuf`` bytes, forced when the process may).
    """

    def __init__(self, protocol: int = NETLINK_GENERIC, *, rcvbuf: int = 4 << 20, window: int = 128,
                 unsolicited: Callable[[Message], None] | None = None,
                 on_overrun: Callable[[], None] | None = None) -> None:
        self.window = max(1, window)
        self.unsolicited = unsolicited
        self.on_overrun = on_overrun
        #: receive-queue overruns (ENOBUFS) seen on this socket
        self.overruns = 0
        self.closed = False
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        except OSError as exc:
            raise ProbeError(f"cannot open netlink socket: {exc.strerror or exc}") from None
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            except OSError:
                pass
            self.sock.bind((0, 0))
            self.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise ProbeError(f"cannot set up netlink socket: {exc.strerror or exc}") from None
        self.portid: int = self.sock.getsockname()[0]
        self._seq = 0
        # seq -> (batch, index, flags of the request)
        self._pending: dict[int, tuple[_Batch, int, int]] = {}
        # requests not sent yet: (seq, message); _qpos is the first unsent one
        self._queue: list[tuple[int, bytes]] = []
        self._qpos = 0
        self._unsent = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
        self._fail_all(NetlinkError(errno.ECONNABORTED, "netlink socket closed"))
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests -----------------------------------------------------------------------------------------------

    async def request(self, message: bytes, *, ack_only: bool = False) -> list[Message]:
        """Send one request; its reply messages (acks and ``NLMSG_DONE`` left out). Raises the kernel's error.

        ``ack_only``: the request (with ``NLM_F_ACK``) is answered by an ack
        alone, so on a socket with an ``unsolicited`` callback any data message
        that happens to carry its sequence number is a notification.
        """
        (reply,) = await self._run((message,), None, _ACK_ONLY if ack_only else 0)
        if isinstance(reply, ProbeError):
            raise reply
        return reply  # type: ignore[no-any-return]

    async def transact(self, messages_: Sequence[bytes]) -> list[Reply]:
        """Send every request (built messages; their seq fields are overwritten); one :data:`Reply` each, in order."""
        return await self._run(messages_, None)

    async def query_many(self, messages_: Sequence[bytes], decode: Callable[[bytes, int, int], T],
                         ) -> list[T | ProbeError]:
        """Like :meth:`transact` for requests answered by one message each, decoded on arrival.

        ``decode(datagram, start, end)`` gets the reply message at
        ``datagram[start:end]`` (its nlmsghdr included); a :class:`ParseError`
        it raises becomes that request's reply, as does the kernel's error.
        """
        return await self._run(messages_, decode)

    async def _run(self, messages_: Sequence[bytes], decode: Callable[[bytes, int, int], Any] | None,
                   mark: int = 0) -> list[Any]:
        if self.closed:
            raise ProbeError("netlink socket closed")
        self._attach()
        if not messages_:
            return []
        batch = _Batch(len(messages_), asyncio.get_running_loop().create_future(), decode)
        pending = self._pending
        queue = self._queue
        flags_of = _FLAGS.unpack_from
        seq = self._seq
        for i, msg in enumerate(messages_):
            seq = seq + 1 if seq < _SEQ_MASK else 1
            queue.append((seq, msg))
            pending[seq] = (batch, i, 0 if decode else flags_of(msg, 6)[0] | mark)
        self._seq = seq
        self._unsent += len(messages_)
        self._pump()
        try:
            return await batch.future
        finally:
            if not batch.future.done() or batch.future.cancelled():
                self._forget(batch)

    def _forget(self, batch: _Batch) -> None:
        gone = {s for s, (b, _, _) in self._pending.items() if b is batch}
        for seq in gone:
            del self._pending[seq]
        rest = [q for q in self._queue[self._qpos:] if q[0] not in gone]
        self._queue = rest
        self._qpos = 0
        self._unsent = len(rest)

    def _pump(self) -> None:
        """Send queued requests, in one datagram, while fewer than ``window`` are waiting for replies."""
        room = self.window - (len(self._pending) - self._unsent)
        if room <= 0 or not self._unsent:
            return
        start = self._qpos
        chunk = self._queue[start:start + room]
        self._qpos += len(chunk)
        self._unsent -= len(chunk)
        if not self._unsent:
            self._queue.clear()
            self._qpos = 0
        buf = bytearray(b"".join(m for _, m in chunk))
        off = 0
        pack_seq = _SEQ.pack_into
        for seq, m in chunk:
            pack_seq(buf, off + 8, seq)
            off += align(len(m))
        try:
            self.sock.send(buf)
        except OSError as exc:
            err = NetlinkError(exc.errno or errno.EIO, "send")
            for seq, _ in chunk:
                entry = self._pending.pop(seq, None)
                if entry is not None:
                    self._complete(entry[0], entry[1], err)

    # --- replies ------------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        recv = self.sock.recv
        unpack = NLMSG_HDR.unpack_from
        pending = self._pending
        while True:
            try:
                data = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    if self.on_overrun is not None:
                        self.on_overrun()
                    if self.unsolicited is None:
                        self._fail_all(NetlinkError(errno.ENOBUFS, "netlink receive queue overrun"))
                    continue
                self._fail_all(NetlinkError(exc.errno or errno.EIO, "recv"))
                return
            n = len(data)
            if n < 16:
                continue
            length, mtype, flags, seq, portid = unpack(data, 0)
            # fast path: a datagram holding the one reply of a query_many request
            entry = pending.get(seq) if length == n and mtype > NLMSG_DONE else None
            decode = entry[0].decode if entry is not None else None
            if entry is not None and decode is not None:
                batch, i, _ = entry
                del pending[seq]
                try:
                    batch.replies[i] = decode(data, 0, n)
                except ParseError as exc:
                    batch.replies[i] = exc
                batch.left -= 1
                if not batch.left:
                    batch.finish()
                continue
            off = 0
            while n - off >= 16:
                length, mtype, flags, seq, portid = unpack(data, off)
                if length < 16 or off + length > n:
                    break  # malformed: the rest of this datagram cannot be matched to anything
                self._dispatch(data, off, length, mtype, flags, seq, portid)
                off += (length + 3) & ~3
        self._pump()

    def _dispatch(self, data: bytes, off: int, length: int, mtype: int, flags: int, seq: int, portid: int) -> None:
        entry = self._pending.get(seq)
        if entry is None or (mtype > NLMSG_DONE and entry[2] & _ACK_ONLY and self.unsolicited):
            # nobody waits for it, or an ack-only request on a notification socket: a notification
            if self.unsolicited is not None and mtype > NLMSG_DONE:
                self.unsolicited(Message(mtype, flags, seq, portid, data[off + 16:off + length]))
            return
        batch, i, rflags = entry
        if mtype in (NLMSG_ERROR, NLMSG_DONE):
            code = -_I32.unpack_from(data, off + 16)[0] if length >= 20 else 0  # DONE may carry a dump's error
            del self._pending[seq]
            err = None
            if code > 0:
                detail = ext_ack_message(Message(mtype, flags, seq, portid, data[off + 16:off + length]))
                err = NetlinkError(code, detail)
            self._complete(batch, i, err)
            return
        if batch.decode is not None:
            del self._pending[seq]
            try:
                batch.replies[i] = batch.decode(data, off, off + length)
            except ParseError as exc:
                batch.replies[i] = exc
            self._complete(batch, i, None)
            return
        got = batch.replies[i]
        if isinstance(got, list):
            got.append(Message(mtype, flags, seq, portid, data[off + 16:off + length]))
        if not (flags & NLM_F_MULTI) and not (rflags & NLM_F_ACK):
            del self._pending[seq]
            self._complete(batch, i, None)

    def _complete(self, batch: _Batch, i: int, err: ProbeError | None) -> None:
        if err is not None:
            batch.replies[i] = err
        batch.left -= 1
        if batch.left == 0:
            batch.finish()

    def _fail_all(self, exc: ProbeError) -> None:
        pending = dict(self._pending)
        self._pending.clear()
        self._queue.clear()
        self._qpos = 0
        self._unsent = 0
        for batch, i, _ in pending.values():
            self._complete(batch, i, exc)

    def __repr__(self) -> str:
        state: Any = "closed" if self.closed else f"pending={len(self._pending)}"
        return f"<NetlinkSocket portid={self.portid} {state}>"
