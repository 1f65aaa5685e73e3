"""Sans-IO netlink codec: ``nlmsghdr``, ``genlmsghdr`` and ``nlattr``.

Everything here turns bytes into values and back; nothing opens a socket.
Layout (all integers in host byte order, as the kernel sends them)::

    nlmsghdr   u32 len | u16 type | u16 flags | u32 seq | u32 portid   (16 bytes)
    genlmsghdr u8 cmd | u8 version | u16 reserved                       (4 bytes)
    nlattr     u16 len | u16 type | payload, padded to 4 bytes

A datagram may carry several messages (multipart dumps); each message and each
attribute starts on a 4-byte boundary. Malformed input raises
:class:`~agent.errors.ParseError`; an ``NLMSG_ERROR`` with a non-zero code is
surfaced as :class:`NetlinkError` by :func:`check_error`.
"""

from __future__ import annotations

import errno as _errno
import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

from ..errors import ParseError, ProbeError

__all__ = [
    "GENL_HDR",
    "NLA_F_NESTED",
    "NLA_F_NET_BYTEORDER",
    "NLA_HDR",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "NLMSG_HDR",
    "NLMSG_NOOP",
    "NLMSG_OVERRUN",
    "NLM_F_ACK",
    "NLM_F_DUMP",
    "NLM_F_MULTI",
    "NLM_F_REQUEST",
    "Message",
    "NetlinkError",
    "align",
    "attr_str",
    "attr_u16",
    "attr_u32",
    "attrs",
    "attrs_dict",
    "build_attr",
    "build_genl",
    "build_message",
    "check_error",
    "error_code",
    "ext_ack_message",
    "genl_header",
    "messages",
]

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
_NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

NLMSG_HDR = struct.Struct("=IHHII")
GENL_HDR = struct.Struct("=BBH")
NLA_HDR = struct.Struct("=HH")
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")


class NetlinkError(ProbeError):
    """The kernel answered a request with a negative error code.

    ``errno`` is the positive error number (``errno.ESRCH``, ``errno.EPERM`` ...).
    """

    def __init__(self, errno: int, context: str = "") -> None:
        self.errno = errno
        name = _errno.errorcode.get(errno, str(errno))
        text = f"{name}: {os.strerror(errno)}"
        super().__init__(f"{context}: {text}" if context else text)


def align(n: int) -> int:
    """Round ``n`` up to the 4-byte netlink alignment."""
    return (n + 3) & ~3


class Message(NamedTuple):
    """One netlink message: header fields and the payload after the 16-byte header."""

    type: int
    flags: int
    seq: int
    portid: int
    payload: bytes


def messages(data: bytes) -> Iterator[Message]:
    """The messages of one datagram, in order.

    A length that runs past the datagram or below the header size is a
    :class:`ParseError` (the kernel never sends one; a bug or a truncated read does).
    """
    off = 0
    end = len(data)
    unpack = NLMSG_HDR.unpack_from
    while end - off >= 16:
        length, mtype, flags, seq, portid = unpack(data, off)
        if length < 16 or off + length > end:
            raise ParseError(f"netlink message length {length} at offset {off} does not fit {end} bytes")
        yield Message(mtype, flags, seq, portid, data[off + 16:off + length])
        off += align(length)
    if off < end and any(data[off:end]):
        raise ParseError(f"{end - off} trailing bytes after the last netlink message")


def error_code(msg: Message) -> int:
    """The (positive) errno of an ``NLMSG_ERROR`` message; 0 is an acknowledgement."""
    if len(msg.payload) < 4:
        raise ParseError("NLMSG_ERROR shorter than its error code")
    return -int(_I32.unpack_from(msg.payload)[0])


NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1


def ext_ack_message(msg: Message) -> str:
    """The kernel's extended-ack text of an ``NLMSG_ERROR`` (``NETLINK_EXT_ACK``), or ``""``."""
    if not msg.flags & NLM_F_ACK_TLVS or len(msg.payload) < 20:
        return ""
    inner_len = NLMSG_HDR.unpack_from(msg.payload, 4)[0]
    start = 20 if msg.flags & NLM_F_CAPPED else 4 + align(inner_len)
    try:
        for atype, value in attrs(msg.payload, start):
            if atype == NLMSGERR_ATTR_MSG:
                return attr_str(value)
    except ParseError:
        pass
    return ""


def check_error(msg: Message, context: str = "") -> bool:
    """For an ``NLMSG_ERROR``: raise :class:`NetlinkError` if it is one, else return ``True`` (an ack).

    Returns ``False`` for any other message type.
    """
    if msg.type != NLMSG_ERROR:
        return False
    code = error_code(msg)
    if code:
        detail = ext_ack_message(msg)
        raise NetlinkError(code, f"{context}: {detail}" if context and detail else context or detail)
    return True


def build_message(mtype: int, flags: int, seq: int, payload: bytes, portid: int = 0) -> bytes:
    """One netlink message with its header; the payload is padded to 4 bytes."""
    length = 16 + len(payload)
    pad = align(length) - length
    return NLMSG_HDR.pack(length, mtype, flags, seq, portid) + payload + b"\0" * pad


def build_genl(cmd: int, version: int, attributes: bytes = b"") -> bytes:
    """A generic-netlink payload: ``genlmsghdr`` followed by already built attributes."""
    return GENL_HDR.pack(cmd, version, 0) + attributes


def genl_header(payload: bytes) -> tuple[int, int]:
    """``(cmd, version)`` of a generic-netlink payload."""
    if len(payload) < 4:
        raise ParseError("generic netlink payload shorter than genlmsghdr")
    cmd, version, _ = GENL_HDR.unpack_from(payload)
    return cmd, version


def build_attr(atype: int, value: bytes) -> bytes:
    """One ``nlattr`` (header, value, padding)."""
    length = 4 + len(value)
    return NLA_HDR.pack(length, atype) + value + b"\0" * (align(length) - length)


def attrs(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """``(type, value)`` of each attribute in ``data[start:end]``; flag bits are masked off the type."""
    stop = len(data) if end is None else end
    off = start
    unpack = NLA_HDR.unpack_from
    while stop - off >= 4:
        length, atype = unpack(data, off)
        if length < 4 or off + length > stop:
            raise ParseError(f"netlink attribute length {length} at offset {off} does not fit {stop} bytes")
        yield atype & _NLA_TYPE_MASK, data[off + 4:off + length]
        off += align(length)


def attrs_dict(data: bytes, start: int = 0) -> dict[int, bytes]:
    """Attributes as a mapping (the last one wins when a type repeats)."""
    return dict(attrs(data, start))


def attr_u16(value: bytes) -> int:
    if len(value) < 2:
        raise ParseError("u16 attribute shorter than 2 bytes")
    return int(_U16.unpack_from(value)[0])


def attr_u32(value: bytes) -> int:
    if len(value) < 4:
        raise ParseError("u32 attribute shorter than 4 bytes")
    return int(_U32.unpack_from(value)[0])


def attr_str(value: bytes) -> str:
    """A NUL-terminated string attribute."""
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")
