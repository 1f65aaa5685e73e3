"""Per-source sequence numbers that only go up, also across restarts.

Known sources reserve numbers in blocks: the reserved ceiling is written to
``sequences.json`` (atomically: temp file, fsync, rename) before a number above
the previous ceiling is handed out, so a crash can only skip numbers, never
repeat one. A clean shutdown records every source's exact last number, so a
normal restart continues without a gap: a gap in a source's sequence means the
agent died.

A source seen for the first time costs no write: guests name their own
sources, and one that invents a source per event must not turn every event
into an fsync. Its numbers start at 1 after a clean start; after an unclean one
(the file says the previous run did not stop cleanly, or is unreadable) a new
source starts above anything the lost run can have handed out to it: at the
run's *epoch* (counted up at every start) times 2^32, or, when even the epoch
is lost, at the current time in microseconds. That start (``floor``) is kept
in the file through later clean runs: a source the lost run numbered but never
wrote down may come back after them. At most ``max_sources`` sources
are tracked; a source dropped to make room starts again above every number
handed out to a dropped one.

One process at a time keeps a state file: it holds an ``flock`` on
``sequences.lock`` beside it for as long as the store is open. Another process
started on the same state (``hoststamp probe`` while the agent runs, a second
agent) does not read or write the file, so it can neither make the first one
skip numbers nor hand out numbers the first one has handed out, or will: it
borrows blocks of numbers from the current time in microseconds on, far above
what a running agent reaches, each above every block any such process borrowed
before (``sequences.borrowed``, under an flock), so that two of them never
hand out the same number either. Its numbers are not kept
(:attr:`SequenceStore.held_by` names the holder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import time
from pathlib import Path

from ..errors import ConfigError
from ..hostfs.reader import read_small
from ..model import MAX_KEPT_NAME, bounded_name

__all__ = ["SequenceStore"]

BLOCK = 4096
#: numbers left to the holder of the state above what it took over from borrowers, below any later borrower's
HOLDER_ROOM = 1 << 32
MAX_SOURCES = 16384
#: the most read of the state file (its sources are bounded: far below this)
MAX_STATE = 64 << 20
EPOCH_SHIFT = 32

log = logging.getLogger("hoststamp.pipeline")


class SequenceStore:
    """``next(source)`` returns increasing numbers per source; persisted when ``path`` is given."""

    def __init__(self, path: Path | None, *, block: int = BLOCK, max_sources: int = MAX_SOURCES) -> None:
        self._path = path
        self._block = block
        self._max_sources = max_sources
        self._last: dict[str, int] = {}
        self._ceiling: dict[str, int] = {}
        self._epoch = 0
        #: where a source seen for the first time starts (0 after a clean start)
        self._fresh = 0
        #: above every number handed out to a source that was dropped from tracking
        self._dropped_floor = 0
        #: the previous run did not stop cleanly (or its state was unreadable)
        self.unclean = False
        #: the process that holds the state file, when another one does (this store then keeps nothing)
        self.held_by: str | None = None
        self._lock_fd = -1
        #: where the processes that do not hold the state take their blocks of numbers from (see :meth:`_borrow`)
        self._borrowed: Path | None = None
        if path is not None and not self._lock(path):
            self._borrowed = path.with_name("sequences.borrowed")
            self._path = path = None
        if path is not None:
            try:
                self._load(path)
                self._epoch += 1
                if self.unclean:  # above where the lost run started new sources, by more than it can have used
                    self._fresh = max(self._fresh + (1 << EPOCH_SHIFT), self._epoch << EPOCH_SHIFT)
                self._absorb_borrowed(path.with_name("sequences.borrowed"))
                self._save(clean=False)
            except BaseException:
                self._unlock()
                raise

    def _lock(self, path: Path) -> bool:
        """Take the state's lock (kept until :meth:`close`); False when another process holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name("sequences.lock")
        fd = _open_regular(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            self.held_by = f"pid {holder}" if holder.isdigit() else "another process"
            log.warning("sequence state %s is held by %s: this process's sequence numbers start at the current "
                        "time in microseconds and are not kept", path, self.held_by)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return True

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(read_small(str(path), MAX_STATE))  # a FIFO there is refused, never waited on
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # nothing known: start new sources above any earlier run's numbers
            log.warning("sequence state %s is unreadable (%s): it is replaced, and sources are numbered from the "
                        "current time in microseconds, above anything an earlier run handed out", path,
                        getattr(exc, "strerror", None) or exc)
            self.unclean = True
            self._fresh = int(time.time() * 1e6)
            return
        clean = bool(doc.get("clean", False))
        self.unclean = not clean
        self._epoch = int(doc.get("epoch", 0))
        # where new sources start stays where an unclean run put it, through clean runs after it: the lost run
        # may have numbered sources this file never named
        self._fresh = max(self._fresh, int(doc.get("floor", 0)))
        for source, entry in dict(doc.get("sources", {})).items():
            last, reserved = int(entry.get("last", 0)), int(entry.get("reserved", 0))
            start = last if clean else max(last, reserved)
            self._last[source] = start
            self._ceiling[source] = start

    def next(self, source: str) -> int:
        if len(source) > MAX_KEPT_NAME:  # kept (in memory and in the file) by its digest: guests name sources
            source = bounded_name(source)
        last = self._last.get(source)
        if last is None:
            last = max(self._fresh, self._dropped_floor)
            if len(self._last) >= self._max_sources:
                self._drop_one()
            if self._borrowed is not None:
                last = self._borrow(last + 1, source) - 1
                self._ceiling[source] = last + self._block
            else:
                # a new source needs no write now: after a crash it would start above this run's numbers anyway
                self._ceiling[source] = last + 1 + self._block
        n = last + 1
        self._last[source] = n
        if n > self._ceiling[source]:
            if self._borrowed is not None:
                n = self._last[source] = self._borrow(n, source)
                self._ceiling[source] = n + self._block - 1
            else:
                self._ceiling[source] = n + self._block
                if self._path is not None:
                    self._save(clean=False)
        return n

    def _borrow(self, at_least: int, source: str) -> int:
        """The first of ``block`` numbers no other process on this state has been or will be handed: from the
        current time in microseconds (far above what the process that holds the state reaches), above every
        block borrowed before (``sequences.borrowed``, under an flock), and at least ``at_least``. The block's
        end is noted for ``source`` there too: the next process to hold the state continues above it."""
        assert self._borrowed is not None
        with _Borrowed(self._borrowed) as doc:
            start = max(doc.ceiling + 1, int(time.time() * 1e6), at_least)
            doc.ceiling = start + self._block - 1
            doc.sources.pop(source, None)
            doc.sources[source] = doc.ceiling
            while len(doc.sources) > self._max_sources:  # forget the oldest; new sources start above it
                doc.floor = max(doc.floor, doc.sources.pop(next(iter(doc.sources))))
            return start

    def _absorb_borrowed(self, path: Path) -> None:
        """Continue above what processes that borrowed numbers while another held the state handed out (a
        ``hoststamp probe`` during a run): per source, and for new sources above what the notes lost."""
        if not path.exists():
            return
        with _Borrowed(path) as doc:
            if not doc.sources and not doc.floor:
                return
            for source, end in doc.sources.items():
                if end > self._last.get(source, 0):
                    if source not in self._last and len(self._last) >= self._max_sources:
                        self._drop_one()
                    self._last[source] = end
                    self._ceiling[source] = end  # its next number reserves a block, written down first
            self._fresh = max(self._fresh, doc.floor)
            # those sources now count on from among the borrowed numbers: later borrowers start this far above,
            # so no number of theirs is one this state hands out
            doc.ceiling += HOLDER_ROOM
            doc.sources, doc.floor = {}, 0  # kept in this state from now on

    def _drop_one(self) -> None:
        oldest = next(iter(self._last))
        self._dropped_floor = max(self._dropped_floor, self._last.pop(oldest))
        self._ceiling.pop(oldest, None)

    def last(self, source: str) -> int:
        return self._last.get(source, 0)

    def close(self) -> None:
        """Record exact positions: the next start continues without a gap. Then let the state go."""
        try:
            if self._path is not None:
                self._save(clean=True)
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # the lock goes with the descriptor
            self._lock_fd = -1

    def _save(self, *, clean: bool) -> None:
        assert self._path is not None
        doc = {
            "clean": clean,
            "epoch": self._epoch,
            "floor": max(self._fresh, self._dropped_floor),
            "sources": {
                s: {"last": self._last.get(s, 0), "reserved": self._last.get(s, 0) if clean else self._ceiling[s]}
                for s in self._ceiling
            },
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # a temp name of this process's own: two agents started on one state_dir must not rename each other's file
        tmp = self._path.with_name(f"{self._path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class _Borrowed:
    """``sequences.borrowed`` under its flock, read on entry and written back on a clean exit: the end of the
    last block any process borrowed (``ceiling``), and per source the end of its last block (``sources``, at
    most ``max_sources``; ``floor``: above the ends forgotten). A file of the older form holds the ceiling
    alone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.ceiling = 0
        self.floor = 0
        self.sources: dict[str, int] = {}

    def __enter__(self) -> _Borrowed:
        self.fd = _open_regular(self.path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # held for a read and a write
            raw = b""
            while chunk := os.pread(self.fd, 1 << 16, len(raw)):
                raw += chunk
            text = raw.decode("utf-8", "replace").strip()
            if text.isdigit():
                self.ceiling = int(text)
            elif text:
                doc = json.loads(text)
                self.ceiling, self.floor = int(doc.get("ceiling", 0)), int(doc.get("floor", 0))
                self.sources = {str(k): int(v) for k, v in dict(doc.get("sources", {})).items()}
        except (ValueError, TypeError, AttributeError):  # damaged: uniqueness still holds from the clock on
            pass
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, kind: object, *_rest: object) -> None:
        try:
            if kind is None:
                data = json.dumps({"ceiling": self.ceiling, "floor": self.floor, "sources": self.sources},
                                  separators=(",", ":")).encode()
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, data, 0)
        finally:
            os.close(self.fd)


def _open_regular(path: Path) -> int:
    """``path`` opened to read and write (made if missing), as long as it is a regular file: a FIFO or a device
    put there is a configuration error naming the state directory, not a failure to blame on something else."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: not a regular file (remove it: the agent makes it)", key="agent.state_dir")
    os.set_blocking(fd, True)
    return fd
