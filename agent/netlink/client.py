"""The asyncio taskstats client: per-task queries and cgroupstats over one socket.

The family id of ``TASKSTATS`` is resolved once per network namespace with
``CTRL_CMD_GETFAMILY`` and cached for the life of the process.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ParseError, ProbeError
from .codec import NLMSG_ERROR, NetlinkError, messages
from .genl import Family, build_getfamily, parse_families
from .nlsocket import NETLINK_GENERIC, NetlinkSocket
from .structs import CgroupStats, TaskStats
from .taskstats import TASKSTATS_GENL_NAME, build_cgroupstats, build_get, decode_reply, parse_cgroupstats

__all__ = [
    "CgroupV2Unsupported",
    "TaskstatsClient",
    "family_cache_clear",
    "has_net_admin",
    "resolve_family",
    "resolve_family_sync",
]

CAP_NET_ADMIN = 12

_FAMILIES: dict[tuple[int, str], Family] = {}


class CgroupV2Unsupported(NetlinkError):
    """``CGROUPSTATS_CMD_GET`` on a cgroup v2 directory: the kernel answers EINVAL."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EINVAL, f"{path}: cgroupstats unsupported on cgroup v2")
        self.path = path


def _netns() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def has_net_admin(status: str | os.PathLike[str] = "/proc/self/status") -> bool:
    """Whether this process holds CAP_NET_ADMIN in its effective set (taskstats queries need it)."""
    try:
        text = Path(status).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
            except (IndexError, ValueError):
                return False
    return False


def family_cache_clear() -> None:
    _FAMILIES.clear()


def _cached(name: str) -> Family | None:
    return _FAMILIES.get((_netns(), name))


def _remember(fams: Iterable[Family], name: str) -> Family:
    for fam in fams:
        if fam.name == name:
            _FAMILIES[(_netns(), name)] = fam
            return fam
    raise NetlinkError(errno.ENOENT, f"generic netlink family {name!r}")


async def resolve_family(sock: NetlinkSocket, name: str = TASKSTATS_GENL_NAME) -> Family:
    """The family ``name``: from the cache, else asked on ``sock`` with ``CTRL_CMD_GETFAMILY``."""
    fam = _cached(name)
    if fam is None:
        fam = _remember(parse_families(await sock.request(build_getfamily(0, name))), name)
    return fam


def resolve_family_sync(name: str = TASKSTATS_GENL_NAME, timeout: float = 2.0) -> Family:
    """Resolve ``name`` with a short blocking exchange (for cheap, sync availability checks)."""
    fam = _cached(name)
    if fam is not None:
        return fam
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC) as s:
            s.settimeout(timeout)
            s.bind((0, 0))
            s.send(build_getfamily(1, name))
            got = []
            while True:
                batch = list(messages(s.recv(65536)))
                got += batch
                if any(m.type == NLMSG_ERROR for m in batch):  # the ack (or the error) ends it
                    break
    except OSError as exc:
        raise ProbeError(f"generic netlink: {exc.strerror or exc}") from None
    return _remember(parse_families(got), name)


class TaskstatsClient:
    """Taskstats queries over one :class:`NetlinkSocket`.

    Use as ``async with TaskstatsClient() as c`` or call :meth:`close`.
    """

    def __init__(self, *, window: int = 128, rcvbuf: int = 4 << 20) -> None:
        self.sock = NetlinkSocket(NETLINK_GENERIC, window=window, rcvbuf=rcvbuf)
        self._family: Family | None = None

    async def __aenter__(self) -> TaskstatsClient:
        await self.family()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    async def family(self, name: str = TASKSTATS_GENL_NAME) -> Family:
        """The family, from the cache or from ``CTRL_CMD_GETFAMILY``."""
        if self._family is None:
            self._family = await resolve_family(self.sock, name)
        return self._family

    async def get(self, pid: int, *, tgid: bool = False) -> TaskStats:
        """Stats of one task (``tgid=True``: its thread group). Raises :class:`NetlinkError` (ESRCH if gone)."""
        (one,) = await self.get_many((pid,), tgid=tgid)
        if isinstance(one, ProbeError):
            raise one
        return one

    async def get_many(self, pids: Sequence[int], *, tgid: bool = False) -> list[TaskStats | ProbeError]:
        """Stats of every pid, in order; a pid the kernel refused gives its :class:`NetlinkError` (ESRCH, EPERM)."""
        fam = (await self.family()).id
        return await self.sock.query_many([build_get(fam, 0, p, tgid=tgid) for p in pids], decode_reply)

    async def cgroupstats(self, path: str | os.PathLike[str]) -> CgroupStats:
        """Task counts of one cgroup v1 directory; :class:`CgroupV2Unsupported` on a v2 directory."""
        fam = (await self.family()).id
        p = os.fspath(path)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ProbeError(f"{p}: {exc.strerror or exc}") from None
        try:
            reply = await self.sock.request(build_cgroupstats(fam, 0, fd))
        except NetlinkError as exc:
            if exc.errno == errno.EINVAL and (Path(p) / "cgroup.controllers").exists():
                raise CgroupV2Unsupported(p) from None
            raise NetlinkError(exc.errno, p) from None
        finally:
            os.close(fd)
        if not reply:
            raise ParseError("CGROUPSTATS_CMD_GET answered without a message")
        return parse_cgroupstats(reply[0])
