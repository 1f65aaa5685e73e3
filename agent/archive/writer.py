"""The one writer of an archive directory. Synchronous: the sink runs it in a worker thread.

``open()`` takes the directory lock and recovers (cutting and recording a torn
last line); ``append(bodies)`` writes one batch with one ``write`` and adds the
lines to the Merkle tree; checkpoints follow every ``checkpoint_every`` events
or ``checkpoint_interval`` seconds (``tick()``); segments rotate by size and age
and are compressed once closed; retention runs after each rotation and on
``tick()``; ``close()`` seals what is left. A batch is all or nothing: if the
write fails, the file is cut back and :class:`~agent.errors.SinkError` raised.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import SinkError
from ..signing.keys import VerifyKey
from . import layout, retention
from .merkle import CompactRange, NodeTable, consistency_proof, leaf_hash
from .note import checkpoint_text, sign_note
from .policy import ArchiveOptions
from .records import b64, b64_list, chain_hash, encode_record, rfc3339
from .recovery import Cut, apply_cut, compress_segment, fsync_dir, recover
from .witness import Witness

__all__ = ["ArchiveWriter", "HostKey"]

_RETAIN_EVERY = 60.0


class HostKey(Protocol):
    keyid: str
    public_raw: bytes

    def sign(self, data: bytes, /) -> bytes: ...


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ArchiveWriter:
    """Appends event lines to ``root``, seals them with signed checkpoints."""

    def __init__(self, root: str | os.PathLike[str], key: HostKey, options: ArchiveOptions | None = None,
                 *, clock: Callable[[], float] = time.time, witness: Path | None = None) -> None:
        """``witness``: a file outside the archive (in the agent's state) where the writer notes the newest
        segment and size it has written, so that a start finding fewer (the newest segments removed while it
        was stopped, which the archive alone cannot show) refuses to go on."""
        self.root = Path(root)
        self.witness = witness
        self.key = key
        self.options = options or ArchiveOptions()
        self.clock = clock
        self.origin = ""
        #: torn lines cut when this writer opened the directory
        self.cuts: list[Cut] = []
        self.last_keyid: str | None = None  #: the key id of the archive's last writer (known once open)
        self._sync = self.options.fsync != "never"
        self._lock_fd = -1
        self._ev_fd = -1
        self._log_fd = -1
        self._seg = 0
        self._seg_first = 0
        self._opened_at = 0.0
        self._ev_bytes = 0
        self._ev_sha: Any = hashlib.sha256()
        self._prev = ""
        self._tree = CompactRange(0)
        self._ck_size = 0
        self._ck_tree = CompactRange(0)
        self._since = CompactRange(0)
        self._ck_time = 0.0
        self._retain_at = 0.0
        self._broken: str | None = None

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Events in the tree (including removed by retention)."""
        return self._tree.end

    @property
    def sealed(self) -> int:
        """Tree size of the last checkpoint."""
        return self._ck_size

    @property
    def segment(self) -> int:
        return self._seg

    @property
    def is_open(self) -> bool:
        return self._lock_fd >= 0

    # -- open / close --------------------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._own_directory()
            self._lock()
            self._resume()
        except OSError as exc:
            self._release()
            why = exc.strerror or str(exc)
            if isinstance(exc, FileExistsError) or (exc.errno == errno.ENOTDIR):
                why = "not a directory (something else is in the way)"
            raise SinkError(f"{self.root}: cannot open the archive: {why}") from None
        except BaseException:  # whatever failed, the lock is not kept: a retry must not find itself the holder
            self._release()
            raise

    def _own_directory(self) -> None:
        """A new archive needs a directory of its own: files it did not write would make it fail verification
        for good (``unexpected-file``). An archive that exists is resumed whatever was added to it since (its
        verification names what was)."""
        listing = layout.scan(self.root)
        if listing.other and not listing.numbers():
            names = ", ".join(p.name for p in listing.other[:3]) + (", ..." if len(listing.other) > 3 else "")
            raise SinkError(f"{self.root}: not an archive and not empty (it holds {names}); an archive needs a "
                            "directory of its own")

    def _lock(self) -> None:
        fd = os.open(self.root / layout.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SinkError(f"{self.root}: the archive is in use by another writer (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _resume(self) -> None:
        own = VerifyKey(ed25519.Ed25519PublicKey.from_public_bytes(self.key.public_raw))
        r = recover(self.root, sync=self._sync, keys={own.keyid: own})
        self.origin = r.origin or self.options.origin or f"hoststamp/{self.key.keyid[:16]}/{secrets.token_hex(4)}"
        if self.options.origin and self.options.origin != self.origin:
            raise SinkError(f"{self.root}: the archive's origin is {self.origin!r}, the options say "
                            f"{self.options.origin!r}")
        self.last_keyid = r.keyid
        if r.create:
            self._check_unaccounted(r.seg)
        # from here on every cut is made and then recorded
        for cut in r.cuts:
            apply_cut(self.root, cut, sync=self._sync)
        self._prev = r.prev
        tree = CompactRange.from_frontier(r.first, r.frontier)
        before = r.ck_size - r.first
        tree.extend(r.leaves[:before])
        self._ck_size, self._ck_tree, self._since = r.ck_size, tree.copy(), CompactRange(r.ck_size)
        for h in r.leaves[before:]:
            tree.append(h)
            self._since.append(h)
        self._tree = tree
        self._ck_time = self.clock()
        self._retain_at = self._ck_time
        self._check_witness(r.seg - 1 if r.create else r.seg)
        if r.create:
            self._start_segment(r.seg, r.first)
        else:
            self._seg, self._seg_first = r.seg, r.first
            self._opened_at = r.opened_at if r.opened_at is not None else self.clock()
            self._log_fd = os.open(layout.log_path(self.root, r.seg), os.O_WRONLY | os.O_APPEND)
            self._ev_fd = os.open(layout.events_path(self.root, r.seg), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._ev_bytes, self._ev_sha = r.events_bytes, r.events_sha
        self.cuts = r.cuts
        for cut in r.cuts:
            self._record({"kind": "cut", "file": cut.file, "offset": cut.offset, "length": cut.length,
                          "sha256": cut.sha256, "reason": "torn last line found on restart"})
        if r.resumed:
            self._record({"kind": "resume", "size": self._tree.end, "clean": r.clean})
        if self._tree.end > self._ck_size:
            self.checkpoint()
        elif self._sync:
            os.fsync(self._log_fd)
        self._note_witness()

    # -- the witness (see :mod:`.witness`; not with ``fsync = "never"``, where the disk may keep less) ---------------

    def _check_witness(self, newest: int) -> None:
        if self.witness is not None and self._sync:
            try:
                Witness(self.witness, self.root).check(self.origin, newest, self._tree.end)
            except SinkError as exc:
                self._broken = str(exc)
                raise

    def _note_witness(self) -> None:
        if self.witness is not None and self._sync:
            Witness(self.witness, self.root).note(self.origin, self._seg, self._ck_size)

    def close(self) -> None:
        """Seal what is unsealed, sync and release the lock. Idempotent."""
        if self._lock_fd < 0:
            return
        try:
            if self._broken is None:
                self.checkpoint()
                self._record({"kind": "stop", "size": self._tree.end})
                self.sync()
                self._note_witness()
        finally:
            self._release()

    def _release(self) -> None:
        for name in ("_ev_fd", "_log_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    # -- writing -------------------------------------------------------------------------------------------------

    def removed(self) -> str | None:
        """Why the archive is gone from under this writer (its directory removed: the lock or the open events file
        unlinked), or None. The writer then stops, as after an error: it seals nothing more there."""
        for name, fd in ((layout.LOCK, self._lock_fd), (f"{layout.seg_stem(self._seg)}{layout.EVENTS}", self._ev_fd)):
            if fd >= 0 and os.fstat(fd).st_nlink == 0:
                self._broken = f"the archive was removed while it was written ({name} is gone)"
                return self._broken
        return None

    def _check(self) -> None:
        if self._lock_fd < 0:
            raise SinkError(f"{self.root}: the archive writer is not open")
        if self._broken is not None:
            raise SinkError(f"{self.root}: the archive writer stopped after an error: {self._broken}")

    def append(self, bodies: Sequence[bytes]) -> None:
        """Write one batch of event lines (each without its newline), all or nothing."""
        self._check()
        if not bodies:
            return
        data = b"\n".join(bodies) + b"\n"
        if data.count(b"\n") != len(bodies):
            raise SinkError("an event body contains a newline; the batch was not written")
        try:
            _write_all(self._ev_fd, data)
        except OSError as exc:
            self._rollback()
            raise SinkError(f"{self.root}: cannot write events: {exc.strerror or exc}") from None
        self._ev_sha.update(data)
        self._ev_bytes += len(data)
        tree, since = self._tree, self._since
        for body in bodies:
            h = leaf_hash(body)
            tree.append(h)
            since.append(h)
        if self.options.fsync == "batch":
            self._guard(os.fdatasync, self._ev_fd)
        now = self.clock()
        opts = self.options
        if self._ev_bytes >= opts.segment_max_bytes or (
                opts.segment_max_age and now - self._opened_at >= opts.segment_max_age):
            self.rotate()
        elif tree.end - self._ck_size >= opts.checkpoint_every or now - self._ck_time >= opts.checkpoint_interval:
            self.checkpoint()

    def _rollback(self) -> None:
        try:
            os.ftruncate(self._ev_fd, self._ev_bytes)
        except OSError as exc:
            self._broken = f"cannot cut back a failed write: {exc.strerror or exc}"

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a file operation; any OSError stops the writer (its state may no longer match the files)."""
        try:
            return fn(*args)
        except OSError as exc:
            self._broken = f"{getattr(fn, '__name__', 'io')}: {exc.strerror or exc}"
            raise SinkError(f"{self.root}: {self._broken}") from None

    def _record(self, fields: Mapping[str, Any]) -> None:
        body = {**fields, "seg": self._seg, "time": rfc3339(self.clock()), "prev": self._prev}
        line = encode_record(body, self.key)
        self._guard(_write_all, self._log_fd, line + b"\n")
        self._prev = chain_hash(line)

    def checkpoint(self) -> bool:
        """Sign a checkpoint of the current tree if it grew since the last one."""
        self._check()
        size = self._tree.end
        if size == self._ck_size:
            return False
        if self._sync:
            self._guard(os.fdatasync, self._ev_fd)
        note = sign_note(checkpoint_text(self.origin, size, self._tree.root()), self.origin, self.key)
        proof = consistency_proof(self._ck_size, size, NodeTable(self._ck_tree, self._since))
        self._record({"kind": "checkpoint", "note": note, "prev_size": self._ck_size,
                      "consistency": b64_list(proof)})
        if self._sync:
            self._guard(os.fsync, self._log_fd)
        self._ck_size, self._ck_tree, self._since = size, self._tree.copy(), CompactRange(size)
        self._ck_time = self.clock()
        return True

    def sync(self) -> None:
        """Make what was written durable (no-op under ``fsync = "never"``)."""
        self._check()
        if self._sync:
            self._guard(os.fdatasync, self._ev_fd)
            self._guard(os.fsync, self._log_fd)

    def tick(self) -> None:
        """Time-driven work: interval checkpoints, age rotation, age retention."""
        self._check()
        now, opts = self.clock(), self.options
        count = self._tree.end - self._seg_first
        if count and opts.segment_max_age and now - self._opened_at >= opts.segment_max_age:
            self.rotate()
        elif self._tree.end > self._ck_size and now - self._ck_time >= opts.checkpoint_interval:
            self.checkpoint()
        if opts.retain_age and now - self._retain_at >= min(_RETAIN_EVERY, opts.retain_age):
            self.retain()

    # -- segments ------------------------------------------------------------------------------------------------

    def _check_unaccounted(self, n: int) -> None:
        ev = layout.events_path(self.root, n)
        if ev.exists() and ev.stat().st_size:
            self._broken = f"{ev.name} already holds events that no record accounts for"
            raise SinkError(f"{ev}: {self._broken}; the archive was left as it is (check it with: "
                            f"hoststamp verify {self.root})")

    def _start_segment(self, n: int, first: int) -> None:
        self._check_unaccounted(n)
        log, ev = layout.log_path(self.root, n), layout.events_path(self.root, n)
        self._seg, self._seg_first, self._opened_at = n, first, self.clock()
        self._log_fd = self._guard(os.open, log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._record({"kind": "open", "origin": self.origin, "first": first,
                      "frontier": b64_list(self._tree.hashes())})
        if self._sync:
            self._guard(os.fsync, self._log_fd)
        self._ev_fd = self._guard(os.open, ev, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._ev_bytes, self._ev_sha = 0, hashlib.sha256()
        if self._sync:
            self._guard(fsync_dir, self.root)

    def rotate(self) -> None:
        """Seal and close the open segment, compress it if asked, open the next, apply retention."""
        self._check()
        if self._tree.end == self._seg_first:
            return
        self.checkpoint()
        n = self._seg
        if self._sync:
            self._guard(os.fdatasync, self._ev_fd)
        os.close(self._ev_fd)
        self._ev_fd = -1
        digest = self._ev_sha.digest()
        self._record({"kind": "close", "first": self._seg_first, "count": self._tree.end - self._seg_first,
                      "bytes": self._ev_bytes, "sha256": b64(digest), "frontier": b64_list(self._tree.hashes()),
                      "compression": self.options.compression})
        if self._sync:
            self._guard(os.fsync, self._log_fd)
        os.close(self._log_fd)
        self._log_fd = -1
        if self.options.compression == "gzip":
            self._guard(compress_segment, self.root, n, digest)
        self._start_segment(n + 1, self._tree.end)
        self._note_witness()
        self.retain()

    def retain(self) -> list[int]:
        """Apply the retention options now; return the segment numbers removed."""
        self._check()
        opts = self.options
        self._retain_at = self.clock()
        if not opts.retain_bytes and not opts.retain_age:
            return []
        try:
            plan = retention.plan(self.root, self._seg, opts.retain_bytes, opts.retain_age, self._retain_at)
            if not plan.numbers:
                return []
            fields = retention.record_fields(self.root, plan)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return []
            raise SinkError(f"{self.root}: retention: {exc.strerror or exc}") from None
        self._record(fields)
        if self._sync:
            self._guard(os.fsync, self._log_fd)
        self._guard(retention.remove, self.root, plan.numbers, self._sync)
        return plan.numbers
