"""Netlink, written for the taskstats family: a sans-IO codec and one thin asyncio socket.

- :mod:`.codec`: ``nlmsghdr``/``genlmsghdr``/``nlattr`` build and parse, errors.
- :mod:`.genl`: ``CTRL_CMD_GETFAMILY`` (family name to id).
- :mod:`.structs`: ``struct taskstats`` (versions 1-16) and ``struct cgroupstats``.
- :mod:`.taskstats`: taskstats and cgroupstats requests and replies.
- :mod:`.nlsocket`: :class:`NetlinkSocket`, many requests in flight by sequence number.
- :mod:`.client`: :class:`TaskstatsClient` (queries, cgroupstats, cached family id).
- :mod:`.exits`: :class:`ExitStream` (per-task accounting of every exiting task).

Everything that only turns bytes into values lives in the first four and is
tested on captured kernel replies; the last three do the I/O.
"""

from .client import CgroupV2Unsupported, TaskstatsClient, family_cache_clear, has_net_admin, resolve_family_sync
from .codec import Message, NetlinkError
from .exits import ExitRecord, ExitStream, Overrun, possible_cpus
from .genl import Family
from .nlsocket import NetlinkSocket
from .structs import KNOWN_VERSION, CgroupStats, TaskStats, unpack_taskstats
from .taskstats import parse_cgroupstats, parse_taskstats

__all__ = [
    "KNOWN_VERSION",
    "CgroupStats",
    "CgroupV2Unsupported",
    "ExitRecord",
    "ExitStream",
    "Family",
    "Message",
    "NetlinkError",
    "NetlinkSocket",
    "Overrun",
    "TaskStats",
    "TaskstatsClient",
    "family_cache_clear",
    "has_net_admin",
    "parse_cgroupstats",
    "parse_taskstats",
    "possible_cpus",
    "resolve_family_sync",
    "unpack_taskstats",
]
