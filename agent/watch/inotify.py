"""inotify through libc: a non-blocking instance, and a pure parser of the records it returns.

Python's standard library has no inotify binding; the three calls used here
(``inotify_init1``, ``inotify_add_watch``, ``inotify_rm_watch``) are reached
through :mod:`ctypes`. Reading is a plain ``os.read`` of the instance's fd,
whose bytes :func:`parse_events` decodes without I/O.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from ..errors import ParseError

__all__ = [
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_ONLYDIR",
    "IN_Q_OVERFLOW",
    "Inotify",
    "InotifyEvent",
    "parse_events",
]

IN_MODIFY = 0x00000002
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000

_HEADER = struct.Struct("=iIII")  # wd, mask, cookie, len
_READ_SIZE = 1 << 16


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One record: the watch it belongs to, what happened, and the entry's name (empty for the watched item)."""

    wd: int
    mask: int
    cookie: int
    name: str

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)


def parse_events(buf: bytes) -> list[InotifyEvent]:
    """Every record in ``buf`` (what one read returned); a truncated record is a :class:`ParseError`."""
    out: list[InotifyEvent] = []
    off, end = 0, len(buf)
    size = _HEADER.size
    while off < end:
        if end - off < size:
            raise ParseError(f"inotify: {end - off} trailing bytes, shorter than a record header")
        wd, mask, cookie, length = _HEADER.unpack_from(buf, off)
        off += size
        if off + length > end:
            raise ParseError(f"inotify: record name of {length} bytes runs past the end of the read")
        raw = buf[off:off + length].split(b"\0", 1)[0]
        off += length
        out.append(InotifyEvent(wd, mask, cookie, raw.decode("utf-8", "surrogateescape")))
    return out


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class Inotify:
    """One non-blocking inotify instance (close-on-exec)."""

    __slots__ = ("fd",)

    def __init__(self) -> None:
        self.fd = _check(_lib().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")

    def add(self, path: str, mask: int) -> int:
        """Watch ``path``; returns the watch descriptor. ``OSError`` (ENOENT, ENOSPC at the user's limit) propagates."""
        return _check(_lib().inotify_add_watch(self.fd, os.fsencode(path), mask), f"inotify_add_watch {path}")

    def remove(self, wd: int) -> None:
        """Stop a watch; one that the kernel dropped already (its directory is gone) is fine."""
        if _lib().inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_rm_watch: {os.strerror(code)}")

    def read(self) -> list[InotifyEvent]:
        """Every record queued now (empty when none)."""
        out: list[InotifyEvent] = []
        while True:
            try:
                buf = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return out
            if not buf:
                return out
            out.extend(parse_events(buf))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
