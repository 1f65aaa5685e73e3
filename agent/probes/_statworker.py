"""The child process that touches mounts for the ``mounts`` probe.

Run as a script (``python -I -S _statworker.py``), never imported by the agent:
it must start fast and import nothing of the package. Once started it writes
``{"ready": true}``, so that its start-up does not count against the first
check's deadline. Then it reads one JSON string (a path) per line on stdin and
answers one JSON object per line on stdout:

* ``{"st_dev": ..., "frsize": ..., "blocks": ..., "bfree": ..., "bavail": ...,
  "files": ..., "ffree": ..., "flag": ...}`` after ``stat`` and ``statvfs``
  both returned;
* ``{"errno": N, "error": "text", "op": "stat" | "statvfs"}`` when one failed;
* ``{"errno": 0, "error": "text", "op": "request"}`` for a request it could not read.

A path whose file system hangs leaves this process in uninterruptible sleep;
the agent stops waiting for it at its deadline and keeps it in its stuck set.
End of input ends the process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def check(path: str) -> dict[str, Any]:
    op = "stat"
    try:
        st = os.stat(path)
        op = "statvfs"
        vfs = os.statvfs(path)
    except OSError as exc:
        return {"errno": exc.errno or 0, "error": exc.strerror or str(exc), "op": op}
    return {
        "st_dev": st.st_dev,
        "frsize": vfs.f_frsize or vfs.f_bsize,
        "blocks": vfs.f_blocks,
        "bfree": vfs.f_bfree,
        "bavail": vfs.f_bavail,
        "files": vfs.f_files,
        "ffree": vfs.f_ffree,
        "flag": vfs.f_flag,
    }


def answer(line: bytes) -> dict[str, Any]:
    try:
        path = json.loads(line)
    except ValueError as exc:
        return {"errno": 0, "error": f"bad request: {exc}", "op": "request"}
    if not isinstance(path, str) or not path:
        return {"errno": 0, "error": "bad request: expected a path", "op": "request"}
    return check(path)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        out.write(json.dumps(answer(line)).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
