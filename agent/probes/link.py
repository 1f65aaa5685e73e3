"""``link``: per-interface counters and state from rtnetlink (pyroute2's asyncio API).

One reading per interface whose name matches ``include`` (default: the
devices of guests and containers - ``tap*``, ``vnet*``, ``veth*``, ``fc-*``)
and not ``exclude``; subject is the interface name. Output: the 64-bit
counters (bytes, packets, errors, drops each way), ``operstate``, ``carrier``,
``mtu``, ``flags``, and ``deltas`` of the counters since the previous reading
of the same interface (``null`` on first sight, or when the name now belongs
to another ifindex). Field by field: ``docs/probes.md``.

Fetching (one RTM_GETLINK dump) is split from :func:`link_output`, which turns
one decoded message into output and does no I/O.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, ClassVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import ProbeError
from ..hostfs import DeltaTracker
from ..model import Reading
from ..watch.links import LinkWatchOptions, netns_problem, watch_links
from .base import Emit, Probe, ProbeContext
from .registry import register

__all__ = ["COUNTERS", "IFF_FLAGS", "LinkOptions", "LinkProbe", "flag_names", "link_output"]

#: net_device flags (include/uapi/linux/if.h), in bit order
IFF_FLAGS: tuple[tuple[int, str], ...] = (
    (1 << 0, "UP"), (1 << 1, "BROADCAST"), (1 << 2, "DEBUG"), (1 << 3, "LOOPBACK"),
    (1 << 4, "POINTOPOINT"), (1 << 5, "NOTRAILERS"), (1 << 6, "RUNNING"), (1 << 7, "NOARP"),
    (1 << 8, "PROMISC"), (1 << 9, "ALLMULTI"), (1 << 10, "MASTER"), (1 << 11, "SLAVE"),
    (1 << 12, "MULTICAST"), (1 << 13, "PORTSEL"), (1 << 14, "AUTOMEDIA"), (1 << 15, "DYNAMIC"),
    (1 << 16, "LOWER_UP"), (1 << 17, "DORMANT"), (1 << 18, "ECHO"),
)

#: counters reported, named as in struct rtnl_link_stats64
COUNTERS: tuple[str, ...] = (
    "rx_bytes", "tx_bytes", "rx_packets", "tx_packets",
    "rx_errors", "tx_errors", "rx_dropped", "tx_dropped",
)

DEFAULT_INCLUDE: tuple[str, ...] = ("tap*", "vnet*", "veth*", "fc-*")


def flag_names(flags: int) -> list[str]:
    """Names of the IFF_* bits set in ``flags``."""
    return [name for bit, name in IFF_FLAGS if flags & bit]


def link_output(msg: Any) -> tuple[str, int, dict[str, Any]]:
    """One decoded RTM_NEWLINK message -> ``(ifname, ifindex, output)`` without deltas.

    ``msg`` is anything with pyroute2's accessors: ``msg["index"]``,
    ``msg["flags"]`` and ``msg.get(name)`` for attributes.
    """
    raw = msg.get("ifname") or ""
    # a name that is not UTF-8 comes as bytes: held as Python holds file names (its bytes are escaped when signed)
    name = os.fsdecode(raw) if isinstance(raw, bytes) else str(raw)
    index = int(msg["index"])
    stats = msg.get("stats64") or msg.get("stats") or {}
    counters = {k: int(stats.get(k, 0)) for k in COUNTERS}
    flags = int(msg["flags"])
    linkinfo = msg.get("linkinfo")
    kind = linkinfo.get("kind") if linkinfo is not None else None
    carrier = msg.get("carrier")
    out: dict[str, Any] = {
        "ifindex": index,
        "kind": kind,
        "address": msg.get("address"),
        "operstate": msg.get("operstate"),
        "carrier": None if carrier is None else bool(carrier),
        "carrier_changes": msg.get("carrier_changes"),
        "mtu": msg.get("mtu"),
        "flags": flag_names(flags),
        **counters,
    }
    return name, index, out


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """``[probes.link]`` keys."""

    #: interface names to report (fnmatch globs)
    include: tuple[str, ...] = DEFAULT_INCLUDE
    #: names to leave out even when included
    exclude: tuple[str, ...] = ()
    #: a named network namespace (``ip netns``) to read instead of the agent's own
    netns: str | None = None
    #: change events (``[probes.link.watch]``): created, deleted, up, down, carrier, renamed, mtu
    watch: LinkWatchOptions = field(default_factory=LinkWatchOptions)

    def __post_init__(self) -> None:
        ns = self.netns
        if ns is not None and (ns in ("", ".", "..") or "\0" in ns or ("/" in ns and not ns.startswith("/"))):
            raise ValueError(f"netns must be the name of a namespace in /run/netns (as `ip netns` lists) or an "
                             f"absolute path to one (/proc/PID/ns/net), got {ns!r}")


@register
class LinkProbe(Probe):
    name: ClassVar[str] = "link"
    Options: ClassVar[type[Any]] = LinkOptions
    carried: ClassVar[tuple[str, ...]] = ("_deltas",)

    def __init__(self, options: LinkOptions, ctx: ProbeContext | None = None) -> None:
        super().__init__(options, ctx or ProbeContext())
        self._deltas = DeltaTracker()

    @classmethod
    def unavailable(cls, options: Any) -> str | None:
        return netns_problem(options.netns) if options.netns is not None else None

    def _wanted(self, name: str) -> bool:
        o: LinkOptions = self.options
        return any(fnmatchcase(name, g) for g in o.include) and not any(fnmatchcase(name, g) for g in o.exclude)

    async def _dump(self) -> list[Any]:
        netns = self.options.netns
        if netns is not None and (problem := netns_problem(netns)) is not None:
            raise ProbeError(problem)
        try:
            # flags=0: never create the namespace (pyroute2's default is O_CREAT)
            async with AsyncIPRoute(netns=netns, flags=0) if netns else AsyncIPRoute() as ipr:
                return [msg async for msg in await ipr.link("dump")]
        except (NetlinkError, OSError) as exc:
            where = f" in netns {netns}" if netns else ""
            raise ProbeError(f"rtnetlink link dump{where}: {exc}") from None

    def provenance(self) -> tuple[str, tuple[str, ...]]:
        netns = self.options.netns
        return (f"rtnetlink:{netns}" if netns else "rtnetlink"), ("RTM_GETLINK",)

    async def collect(self) -> Sequence[Reading]:
        messages = await self._dump()
        now = time.time()
        source = f"rtnetlink:{self.options.netns}" if self.options.netns else "rtnetlink"
        readings: list[Reading] = []
        for msg in messages:
            name, index, output = link_output(msg)
            if not self._wanted(name):
                continue
            counters = {k: output[k] for k in COUNTERS}
            output["deltas"] = self._deltas.update(name, counters, now, identity=index)
            readings.append(Reading(probe=self.name, subject=name, output=output, inputs=("RTM_GETLINK",),
                                    probe_source=source, time=now))
        self._deltas.retain(r.subject for r in readings)
        readings.sort(key=lambda r: r.subject)
        return readings

    async def watch(self, emit: Emit) -> None:
        o: LinkOptions = self.options
        if o.watch.enabled:
            await watch_links(emit, o.watch, link_output, self._wanted, probe=self.name, netns=o.netns)
