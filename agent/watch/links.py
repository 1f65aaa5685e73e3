"""Link change events from rtnetlink notifications: created, deleted, up, down, carrier, renamed, mtu.

A raw ``NETLINK_ROUTE`` socket bound to the ``RTMGRP_LINK`` group (opened in
the probe's network namespace when one is named) is a stream of the watch
source; its messages are decoded with pyroute2's rtnetlink marshal and turned
into the probe's link output by the ``decode`` function the probe passes in.
Each message is compared with the link's previous state (:func:`link_changes`,
pure); the changes seen are gathered per link and emitted, coalesced, as one
``change`` reading per link with the list of ``changes`` and the link's
current output (its last one for a deleted link). A receive-queue overrun
(ENOBUFS) is followed by a fresh dump, compared with the known state, so no
transition is left unreported, only merged.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from ..model import Reading
from .source import Emit, WatchOptions, WatchSource

__all__ = ["LinkState", "LinkWatchOptions", "LinkWatcher", "link_changes", "open_rtnl", "watch_links"]

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
_NLM_F_REQUEST = 1
_NLM_F_DUMP = 0x300
_NLMSG_DONE = 3
_NLMSG_ERROR = 2
_CLONE_NEWNET = 0x40000000
_RCVBUF = 1 << 20
#: order of precedence of the changes, the first present becomes ``change``
ORDER: tuple[str, ...] = ("created", "deleted", "renamed", "up", "down", "carrier_up", "carrier_down", "mtu")

Decode = Callable[[Any], tuple[str, int, dict[str, Any]]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LinkWatchOptions(WatchOptions):
    """``[probes.link.watch]`` keys: ``enabled``, ``coalesce`` (flaps within it are merged with a count)."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the changes are judged on, taken from a link's output."""

    name: str
    up: bool
    carrier: bool | None
    mtu: int | None

    @classmethod
    def of(cls, name: str, out: dict[str, Any]) -> LinkState:
        return cls(name, "UP" in out.get("flags", ()), out.get("carrier"), out.get("mtu"))


def link_changes(prev: LinkState | None, cur: LinkState | None) -> list[str]:
    """The transitions from ``prev`` to ``cur`` (``None``: the link does not exist), in :data:`ORDER`."""
    if prev is None:
        return ["created"] if cur is not None else []
    if cur is None:
        return ["deleted"]
    out: list[str] = []
    if cur.name != prev.name:
        out.append("renamed")
    if cur.up != prev.up:
        out.append("up" if cur.up else "down")
    if cur.carrier is not None and cur.carrier != prev.carrier:
        out.append("carrier_up" if cur.carrier else "carrier_down")
    if cur.mtu != prev.mtu:
        out.append("mtu")
    return out


def netns_path(netns: str) -> str:
    """Where a configured namespace is: an ``ip netns`` name (``/run/netns/NAME``) or an absolute path."""
    return netns if netns.startswith("/") else f"/run/netns/{netns}"


def netns_problem(netns: str) -> str | None:
    """Why ``netns`` cannot be entered, or None. A namespace file is a regular file (nsfs); anything else (a FIFO
    would block whoever opens it) is refused before it is opened."""
    path = netns_path(netns)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"network namespace {netns!r} does not exist"
    except OSError as exc:
        return f"network namespace {netns!r}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"network namespace {netns!r}: {path} is not a namespace file"
    return None


def _in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` in network namespace ``netns`` (:func:`netns_path`), on a fresh thread that ends with it."""
    if netns is None:
        return fn()
    if (problem := netns_problem(netns)) is not None:
        raise OSError(errno.EINVAL, problem)
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns {netns}: {os.strerror(code)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    t = threading.Thread(target=run, name=f"netns-{netns}")
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


def _socket(groups: int) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        s.bind((0, groups))
    except OSError:
        s.close()
        raise
    return s


def open_rtnl(netns: str | None = None) -> tuple[socket.socket, socket.socket]:
    """A socket subscribed to link notifications (non-blocking) and one for dumps (blocking), in ``netns``."""
    mon, req = _in_netns(netns, lambda: (_socket(RTMGRP_LINK), _socket(0)))
    mon.setblocking(False)
    return mon, req


def dump_links(req: socket.socket, seq: int = 1) -> list[Any]:
    """Every RTM_NEWLINK of one RTM_GETLINK dump (blocking; the socket may belong to another namespace)."""
    hdr = struct.pack("=IHHII", 32, RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
    req.send(hdr + struct.pack("=BxHiII", 0, 0, 0, 0, 0))
    marshal = MarshalRtnl()
    out: list[Any] = []
    while True:
        data = req.recv(1 << 20)
        done = False
        for msg in marshal.parse(data):
            t = msg["header"]["type"]
            if t == _NLMSG_DONE:
                done = True
            elif t == _NLMSG_ERROR and msg["header"].get("error"):
                raise OSError(errno.EIO, f"RTM_GETLINK dump failed: {msg['header']['error']}")
            elif t == RTM_NEWLINK:
                out.append(msg)
        if done:
            return out


class LinkWatcher:
    """Link state of one namespace, updated from notifications."""

    def __init__(self, source: WatchSource, decode: Decode, wanted: Callable[[str], bool], *,
                 netns: str | None = None) -> None:
        self.source = source
        self.decode = decode
        self.wanted = wanted
        self.netns = netns
        self.mon, self.req = open_rtnl(netns)
        self._marshal = MarshalRtnl()
        self.state: dict[int, LinkState] = {}
        self.output: dict[int, dict[str, Any]] = {}
        self.names: dict[int, str] = {}
        #: the state each link's last reading showed (the baseline of the next one)
        self.shown: dict[int, LinkState] = {}
        self._seen: dict[int, list[str]] = {}
        self.overruns = 0

    def start_dump(self) -> None:
        """Learn the links present now (no readings; may run on a worker thread before :meth:`listen`)."""
        for msg in dump_links(self.req):
            self._apply(msg, notify=False)
        self.shown = dict(self.state)

    def listen(self) -> None:
        """Start taking notifications (on the loop); those queued since the socket was opened come first."""
        self.source.watch_stream(self.mon.fileno(), self._on_ready)

    def _apply(self, msg: Any, *, notify: bool) -> None:
        if msg.get("family", 0) != 0:  # bridge port messages (AF_BRIDGE) are about something else
            return
        name, index, out = self.decode(msg)
        deleted = msg["header"]["type"] == RTM_DELLINK
        cur = None if deleted else LinkState.of(name, out)
        changes = link_changes(self.state.get(index), cur)
        if deleted:
            self.state.pop(index, None)
        else:
            assert cur is not None
            self.state[index] = cur
            self.output[index] = out
            self.names[index] = name
        if changes and notify:
            if cur is not None and (changes[0] == "created" or "renamed" in changes):
                self._before(index, name)
            self._note(index, changes)

    def _before(self, index: int, name: str) -> None:
        """A link now named ``name``: the deletion of another link of that name, still waiting to be told
        (coalesced), is told first, so that a re-created interface's readings come in the kernel's order."""
        for other in [i for i in self._seen if i != index and i not in self.state and self.names.get(i) == name]:
            self.source.flush(("link", other), partial(self._fire, other))

    def _note(self, index: int, changes: list[str]) -> None:
        seen = self._seen.setdefault(index, [])
        seen.extend(c for c in changes if c not in seen)
        self.source.notify(("link", index), partial(self._fire, index))

    def _on_ready(self) -> None:
        while True:
            try:
                data = self.mon.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    self._resync()
                    continue
                raise
            for msg in self._marshal.parse(data):
                if msg["header"]["type"] in (RTM_NEWLINK, RTM_DELLINK):
                    self._apply(msg, notify=True)

    def _resync(self) -> None:
        """After an overrun: a fresh dump, compared with what is known; links gone are deleted."""
        msgs = dump_links(self.req, seq=self.overruns + 1)
        present = {int(msg["index"]) for msg in msgs}
        # links gone first: a link re-created under an old one's name is then told after the old one's deletion
        for index in [i for i in self.state if i not in present]:
            self.state.pop(index)
            self._note(index, ["deleted"])
        for msg in msgs:
            self._apply(msg, notify=True)
        self.source.push(self.source.reading("rtnetlink", {"change": "overrun", "overruns": self.overruns},
                                             error="link notifications lost (ENOBUFS); state taken again by a dump"))

    def _fire(self, index: int, count: int) -> list[Reading]:
        seen = self._seen.pop(index, [])
        out = dict(self.output.get(index) or {})
        name = self.names.get(index, "")
        cur = self.state.get(index)
        before = self.shown.get(index)
        net = link_changes(before, cur)
        if cur is None:  # deleted: its last output stands, then it is forgotten
            self.output.pop(index, None)
            self.names.pop(index, None)
            self.shown.pop(index, None)
            self.source.forget(("link", index))
        else:
            self.shown[index] = cur
        # a link renamed out of include/exclude is told once more (its readings stop): as its old name was
        was = before.name if before is not None and before.name != name else None
        if not seen or not out or not (self.wanted(name) or (was is not None and self.wanted(was))):
            return []
        changes = sorted(seen, key=ORDER.index)
        out.update({"change": net[0] if net else "flapped", "changes": changes, "coalesced": count - 1})
        if was is not None:
            out["renamed_from"] = was
        return [self.source.reading(name, out, inputs=("RTM_NEWLINK",))]

    def close(self) -> None:
        self.mon.close()
        self.req.close()


async def watch_links(emit: Emit, options: LinkWatchOptions, decode: Decode, wanted: Callable[[str], bool], *,
                      probe: str = "link", netns: str | None = None,
                      ready: Callable[[LinkWatcher], None] | None = None) -> None:
    """Run the link change events of ``netns`` (default: the agent's) until cancelled."""
    source = WatchSource(probe, probe_source=f"rtnetlink:{netns}" if netns else "rtnetlink", max_watches=1,
                         coalesce=options.coalesce)
    if not await source.open_or_report(emit, "rtnetlink", "link change events"):
        return
    with source:
        try:
            watcher = await anyio.to_thread.run_sync(partial(LinkWatcher, source, decode, wanted, netns=netns))
        except OSError as exc:
            where = f" in netns {netns}" if netns else ""
            await emit(source.reading("rtnetlink", {}, error=f"link change events{where} not started: {exc}"))
            return
        try:
            await anyio.to_thread.run_sync(watcher.start_dump)
        except OSError as exc:
            watcher.close()
            where = f" in netns {netns}" if netns else ""
            await emit(source.reading("rtnetlink", {}, error=f"link change events{where} not started: {exc}"))
            return
        try:
            watcher.listen()
            if ready is not None:
                ready(watcher)
            await source.run(emit)
        finally:
            watcher.close()
