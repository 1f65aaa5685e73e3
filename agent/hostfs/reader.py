"""``HostFS(root)``: the one place that opens host files, under a configurable root.

A host path such as ``/proc/self/mountinfo`` is read from ``root`` +
that path, so tests point ``root`` at a fixture tree of real files
(``tests/fixtures/hosts/<scenario>``) and production leaves it at ``/``.
Everything here is synchronous; async callers batch their reads into one
worker-thread hop.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from pathlib import Path

from .parse import MountInfo, find_cgroup2_mount, parse_mountinfo

__all__ = ["CGROUP2_SUPER_MAGIC", "CGROUP_SUPER_MAGIC", "PROC_SUPER_MAGIC", "HostFS", "fs_magic", "read_small"]

_CHUNK = 1 << 16
#: O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, for ever (regular files ignore it)
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


#: ``f_type`` of a cgroup2 file system and of procfs (linux/magic.h)
CGROUP2_SUPER_MAGIC = 0x63677270
#: a cgroup v1 hierarchy (one controller's, as /sys/fs/cgroup/cpu in hybrid mode)
CGROUP_SUPER_MAGIC = 0x27E0EB
PROC_SUPER_MAGIC = 0x9FA0

_libc = ctypes.CDLL(None, use_errno=True)
#: room for ``struct statfs`` (120 bytes on 64-bit Linux), whose first member is ``f_type``, a C long
_STATFS_SIZE = 256


def fs_magic(fd: int) -> int:
    """The ``f_type`` of the file system ``fd`` is on (``fstatfs(2)``): which kind of file system it is."""
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _libc.fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(struct.unpack_from("l", buf.raw)[0]) & 0xFFFFFFFF


def read_small(path: str, limit: int = 1 << 20, dir_fd: int | None = None, *, one_read: bool = False,
               nofollow: bool = False) -> bytes:
    """Read a small (pseudo) file whole with raw ``os`` calls.

    ``dir_fd``: ``path`` is relative to this open directory (saves the path
    walk when many files of one directory are read).

    /proc and /sys report sizes of 0 or 4096 whatever the content, so this
    reads until an empty read instead of trusting ``st_size`` (a table of
    many records, such as mountinfo, comes a page or so per read).
    ``one_read``: the file is written whole on every read (a cgroup file,
    a sysfs attribute), so a short first read is its end. ``limit`` bounds
    memory: a file longer than that is an ``OSError`` (``EFBIG``), never a
    silently cut one. ``OSError`` propagates unchanged (``FileNotFoundError``
    means absent, ``ENODEV`` a cgroup removed while open).

    Only a regular file is read (/proc and /sys files are regular files): a
    FIFO, a socket or a device is an ``OSError`` (``EINVAL``), since reading
    one could wait for ever or never end, and a probe's round with it.
    ``nofollow``: a symbolic link is not followed (``OSError`` ``ELOOP``): a tree the kernel makes holds none,
    so one there leads out of it.
    """
    fd = os.open(path, _FLAGS | os.O_NOFOLLOW if nofollow else _FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device is never read)", path)
        first = os.read(fd, _CHUNK)
        if one_read and len(first) < _CHUNK and len(first) <= limit:
            return first  # written whole: skip the confirming read
        parts = [first]
        total = len(first)
        while first and total <= limit:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
        if total > limit:
            raise OSError(errno.EFBIG, f"longer than {limit} bytes, the most read of this file", path)
        return b"".join(parts) if len(parts) > 1 else first
    finally:
        os.close(fd)


class HostFS:
    """Reads host files relative to ``root`` (default ``/``)."""

    __slots__ = ("root",)

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"HostFS({str(self.root)!r})"

    def path(self, host_path: str) -> Path:
        """Where ``host_path`` (absolute, as seen on the host) lives under ``root``."""
        return self.root / host_path.lstrip("/")

    def read_bytes(self, host_path: str, limit: int = 1 << 20) -> bytes:
        return read_small(str(self.path(host_path)), limit)

    def read_text(self, host_path: str, limit: int = 1 << 20) -> str:
        """The file as text; bytes that are not UTF-8 become U+FFFD (and then fail to parse). A file longer than
        ``limit`` bytes is an ``OSError`` (``EFBIG``)."""
        return self.read_bytes(host_path, limit).decode("utf-8", "replace")

    def exists(self, host_path: str) -> bool:
        return self.path(host_path).exists()

    def mountinfo(self, host_path: str = "/proc/self/mountinfo") -> list[MountInfo]:
        return parse_mountinfo(self.read_text(host_path), source=host_path)

    def cgroup2_mount(self, mountinfo: str = "/proc/self/mountinfo") -> str | None:
        """The host path of the cgroup v2 mount named in ``mountinfo``, or ``None``."""
        return find_cgroup2_mount(self.mountinfo(mountinfo))
