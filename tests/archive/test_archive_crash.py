"""Crash safety: a writer killed with SIGKILL in the middle of a write, again and again.

The child appends large batches as fast as it can. The parent watches the end of
the newest events file and sends SIGKILL at a moment it sees the file end inside
a line, i.e. while the kernel is still copying the batch: the child dies with
part of a record on disk. Each restart must find the torn line, cut it, record
the cut, and continue the same tree; the archive must verify at the end with
every cut reported and no event lost or doubled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.archive import layout
from agent.archive.verify import verify_archive
from agent.archive.writer import ArchiveWriter
from agent.signing.keys import SigningKey, VerifyKey, generate_keypair

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from agent.archive.policy import ArchiveOptions
from agent.archive.writer import ArchiveWriter
from agent.signing.keys import load_signing_key
from tests.archive.archive_helpers import make_event

root, keyfile, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
key = load_signing_key(keyfile)
w = ArchiveWriter(root, key, ArchiveOptions(segment_max_bytes=12 << 20, checkpoint_every=300))
w.open()
print("ready", flush=True)
while True:
    w.append([make_event(key, s, pad=16384) for s in range(seq, seq + 150)])
    seq += 150
"""

MAX_CYCLES = 8


def newest_events(root: Path) -> Path | None:
    listing = layout.scan(root)
    return listing.events[max(listing.events)] if listing.events else None


def kill_mid_write(proc: subprocess.Popen[bytes], root: Path, deadline: float) -> None:
    """SIGKILL ``proc`` the first time the newest events file is seen ending inside a line."""
    fd, path = -1, None
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the writer died on its own"
            current = newest_events(root)
            if current != path:
                if fd >= 0:
                    os.close(fd)
                fd, path = (os.open(current, os.O_RDONLY), current) if current else (-1, None)
            if fd < 0:
                continue
            for _ in range(2000):
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    proc.send_signal(signal.SIGKILL)
                    return
        proc.send_signal(signal.SIGKILL)
    finally:
        if fd >= 0:
            os.close(fd)


@pytest.mark.timeout(90)
def test_sigkill_mid_write_then_restart(tmp_path: Path) -> None:
    keydir, root = tmp_path / "keys", tmp_path / "archive"
    key: SigningKey = generate_keypair(keydir)
    vk = key.verify_key()
    keys: dict[str, VerifyKey] = {vk.keyid: vk}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    torn_seen = cuts_made = 0
    seq = 1
    for cycle in range(MAX_CYCLES):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(keydir / "host.key"), str(seq)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
            time.sleep(0.2 * (cycle % 3))
            kill_mid_write(proc, root, time.monotonic() + 20)
        finally:
            proc.kill()
            assert proc.wait(timeout=10) == -signal.SIGKILL
        ev = newest_events(root)
        torn = ev is not None and ev.stat().st_size > 0 and not ev.read_bytes().endswith(b"\n")
        torn_seen += torn
        w = ArchiveWriter(root, key)
        w.open()
        try:
            event_cuts = [c for c in w.cuts if c.file.endswith(".ndjson")]
            assert len(event_cuts) == int(torn), (cycle, w.cuts)
            cuts_made += len(w.cuts)
            assert w.sealed == w.size, "what survived is sealed at restart"
            seq = w.size + 1
        finally:
            w.close()
        if torn_seen >= 2:
            break
    assert torn_seen >= 1, f"no kill landed inside a write in {MAX_CYCLES} cycles"
    report = verify_archive(root, keys)
    assert report.ok, report.lines()
    assert report.totals.cuts == cuts_made >= torn_seen
    assert report.totals.events == seq - 1 == report.totals.sealed
    notes = [n.code for n in report.notes]
    assert notes.count("cut") == cuts_made and notes.count("unclean-restart") == cycle + 1
    assert set(notes) == {"cut", "unclean-restart"}
