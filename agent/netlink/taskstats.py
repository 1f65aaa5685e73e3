"""Taskstats over generic netlink: requests and replies (sans-IO).

Requests: ``TASKSTATS_CMD_GET`` by pid or thread group, the exit-stream
cpumask (de)registration, ``CGROUPSTATS_CMD_GET`` by directory fd. Replies:
``TASKSTATS_CMD_NEW`` (one aggregate for a query; a task's and maybe its
group's for an exit) and ``CGROUPSTATS_CMD_NEW``. The structs themselves are
decoded by :mod:`.structs`.
"""

from __future__ import annotations

import struct

from ..errors import ParseError
from .codec import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_HDR,
    Message,
    attr_u32,
    attrs,
    build_attr,
    build_genl,
    build_message,
    genl_header,
)
from .structs import CgroupStats, TaskStats, unpack_cgroupstats, unpack_taskstats

__all__ = [
    "TASKSTATS_GENL_NAME",
    "build_cgroupstats",
    "build_deregister",
    "build_get",
    "build_register",
    "decode_reply",
    "parse_cgroupstats",
    "parse_taskstats",
]

TASKSTATS_GENL_NAME = "TASKSTATS"
TASKSTATS_GENL_VERSION = 1

TASKSTATS_CMD_GET = 1
TASKSTATS_CMD_NEW = 2
CGROUPSTATS_CMD_GET = 4
CGROUPSTATS_CMD_NEW = 5

TASKSTATS_TYPE_PID = 1
TASKSTATS_TYPE_TGID = 2
TASKSTATS_TYPE_STATS = 3
TASKSTATS_TYPE_AGGR_PID = 4
TASKSTATS_TYPE_AGGR_TGID = 5

TASKSTATS_CMD_ATTR_PID = 1
TASKSTATS_CMD_ATTR_TGID = 2
TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 3
TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK = 4

CGROUPSTATS_CMD_ATTR_FD = 1
CGROUPSTATS_TYPE_CGROUP_STATS = 1


# --- requests ---------------------------------------------------------------------------------------------------

# nlmsghdr + genlmsghdr + one u32 attribute, in one pack (the hot path of a scan)
_GET = struct.Struct("=IHHIIBBHHHI")


def build_get(family: int, seq: int, pid: int, *, tgid: bool = False) -> bytes:
    """``TASKSTATS_CMD_GET`` for one pid (or thread group)."""
    atype = TASKSTATS_CMD_ATTR_TGID if tgid else TASKSTATS_CMD_ATTR_PID
    return _GET.pack(_GET.size, family, NLM_F_REQUEST, seq, 0, TASKSTATS_CMD_GET, TASKSTATS_GENL_VERSION, 0,
                     8, atype, pid)


def _cpumask_request(family: int, seq: int, atype: int, cpumask: str) -> bytes:
    attr = build_attr(atype, cpumask.encode() + b"\0")
    payload = build_genl(TASKSTATS_CMD_GET, TASKSTATS_GENL_VERSION, attr)
    return build_message(family, NLM_F_REQUEST | NLM_F_ACK, seq, payload)


def build_register(family: int, seq: int, cpumask: str) -> bytes:
    """Ask for exit notifications of tasks on the CPUs of ``cpumask`` (a cpulist such as ``0-3``)."""
    return _cpumask_request(family, seq, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, cpumask)


def build_deregister(family: int, seq: int, cpumask: str) -> bytes:
    return _cpumask_request(family, seq, TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, cpumask)


def build_cgroupstats(family: int, seq: int, fd: int) -> bytes:
    """``CGROUPSTATS_CMD_GET`` for the cgroup directory open as ``fd``."""
    attr = build_attr(CGROUPSTATS_CMD_ATTR_FD, struct.pack("=I", fd))
    return build_message(family, NLM_F_REQUEST, seq, build_genl(CGROUPSTATS_CMD_GET, TASKSTATS_GENL_VERSION, attr))


# --- replies ----------------------------------------------------------------------------------------------------

# outer nlattr, id nlattr, u32 id, stats nlattr: the fixed head of a one-aggregate reply
_AGGR_HEAD = struct.Struct("=HHHHIHH")
# the same, and the struct's version field after it
_AGGR_HEAD_V = struct.Struct("=HHHHIHHH")
_NLA_TYPE = 0x3FFF
_AGGREGATES = frozenset((TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID))


def _aggregate(value_of: bytes, start: int, end: int, outer: int) -> tuple[str, int, TaskStats]:
    ident: int | None = None
    stats: TaskStats | None = None
    for inner, v in attrs(value_of, start, end):
        if inner in (TASKSTATS_TYPE_PID, TASKSTATS_TYPE_TGID):
            ident = attr_u32(v)
        elif inner == TASKSTATS_TYPE_STATS:
            stats = unpack_taskstats(v)
    if ident is None or stats is None:
        raise ParseError("taskstats aggregate without its id or its stats")
    return ("pid" if outer == TASKSTATS_TYPE_AGGR_PID else "tgid", ident, stats)


def parse_taskstats(msg: Message) -> list[tuple[str, int, TaskStats]]:
    """``(kind, id, stats)`` for each aggregate in a ``TASKSTATS_CMD_NEW`` message.

    ``kind`` is ``"pid"`` or ``"tgid"``. A reply to a query carries one
    aggregate; an exit notification carries the task's and, when its thread
    group ended with it, the group's.
    """
    p = msg.payload
    cmd, _ = genl_header(p)
    if cmd != TASKSTATS_CMD_NEW:
        raise ParseError(f"expected TASKSTATS_CMD_NEW, got command {cmd}")
    if len(p) >= 4 + _AGGR_HEAD.size:
        # fast path: exactly one aggregate laid out as the kernel builds it
        olen, otype, ilen, itype, ident, slen, stype = _AGGR_HEAD.unpack_from(p, 4)
        otype &= _NLA_TYPE
        if (4 + ((olen + 3) & ~3) == len(p) and ilen == 8 and itype in (TASKSTATS_TYPE_PID, TASKSTATS_TYPE_TGID)
                and stype & _NLA_TYPE == TASKSTATS_TYPE_STATS and 16 + slen <= 4 + olen
                and otype in (TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID)):
            kind = "pid" if otype == TASKSTATS_TYPE_AGGR_PID else "tgid"
            return [(kind, ident, unpack_taskstats(p, 20, slen - 4))]
    out = [_aggregate(value, 0, len(value), atype) for atype, value in attrs(p, 4)
           if atype in (TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID)]  # skips TASKSTATS_TYPE_NULL padding
    if not out:
        raise ParseError("TASKSTATS_CMD_NEW without an aggregate")
    return out


def decode_reply(data: bytes, start: int, end: int) -> TaskStats:
    """The stats of a query reply: the message at ``data[start:end]`` (for :meth:`NetlinkSocket.transact`)."""
    p = start + 16
    if end - p >= 4 + _AGGR_HEAD_V.size and data[p] == TASKSTATS_CMD_NEW:
        olen, otype, ilen, _id_type, _, slen, stype, version = _AGGR_HEAD_V.unpack_from(data, p + 4)
        if (ilen == 8 and stype & _NLA_TYPE == TASKSTATS_TYPE_STATS and p + 16 + slen <= end
                and 16 + slen <= olen + 4 and otype & _NLA_TYPE in _AGGREGATES):
            return unpack_taskstats(data, p + 20, slen - 4, version)
    hdr = NLMSG_HDR.unpack_from(data, start)
    return parse_taskstats(Message(hdr[1], hdr[2], hdr[3], hdr[4], data[p:end]))[0][2]


def parse_cgroupstats(msg: Message) -> CgroupStats:
    """The counts of one ``CGROUPSTATS_CMD_NEW`` reply."""
    cmd, _ = genl_header(msg.payload)
    if cmd != CGROUPSTATS_CMD_NEW:
        raise ParseError(f"expected CGROUPSTATS_CMD_NEW, got command {cmd}")
    for atype, value in attrs(msg.payload, 4):
        if atype == CGROUPSTATS_TYPE_CGROUP_STATS:
            return unpack_cgroupstats(value)
    raise ParseError("CGROUPSTATS_CMD_NEW without CGROUPSTATS_TYPE_CGROUP_STATS")
