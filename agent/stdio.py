"""The command's standard streams: descriptors closed when it started, an input that cannot be read as a stream,
a reader that went away, and whether two streams share one terminal."""

from __future__ import annotations

import errno
import io
import os
import stat
import sys
from typing import Any

from .sinks.stdout import stdout_closed_at_start

__all__ = ["guard_standard_fds", "same_terminal", "silence_stdout", "stdin_problem"]


def same_terminal(a: Any, b: Any) -> bool:
    """Whether two streams write to one terminal."""
    try:
        return bool(os.isatty(a.fileno()) and os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno())))
    except (OSError, ValueError, AttributeError):
        return False


def stdin_problem() -> str | None:
    """Why standard input cannot be read as a stream of bytes ("closed", "a directory"), or None when it can."""
    if sys.stdin is None:  # closed when the command started (``<&-``)
        return "closed"
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):  # no descriptor of its own: what reads it will tell
        return None
    return "a directory" if stat.S_ISDIR(mode) else None


class _ClosedOutput(io.RawIOBase):
    """What ``sys.stdout`` writes to when fd 1 was closed at start: every write is an error, not a loss."""

    #: the failure was reported: what is left is dropped (the interpreter's flush at exit must not fail again)
    discard = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.discard:
            return len(data)
        raise OSError(errno.EBADF, "standard output is closed")


def guard_standard_fds() -> None:
    """Put ``/dev/null`` on fds 0-2 that were closed at start, so that no file the agent opens later takes one
    of them (events meant for stdout written into an archive, say); writes meant for a closed stdout fail."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if fd == 1:
                stdout_closed_at_start()
                sys.stdout = io.TextIOWrapper(io.BufferedWriter(_ClosedOutput()))


def silence_stdout() -> None:
    """Drop what ``sys.stdout`` still buffers for a descriptor that cannot take it, so that the interpreter's
    own flush at exit does not fail again (with a message and exit status of its own)."""
    _ClosedOutput.discard = True
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass
