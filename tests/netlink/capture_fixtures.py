"""Capture the kernel replies under ``tests/fixtures/netlink/`` (run as root, from the project root).

    python -m tests.netlink.capture_fixtures

Each ``NAME.bin`` holds the datagrams of one exchange, back to back (netlink
messages are 4-byte aligned, so the concatenation is itself a valid message
buffer). ``NAME.json`` records what is known about it *without* the decoder:
the pid and command of the task asked about, its parent, the exit status the
test arranged, the family name asked for. The codec tests decode the bytes and
compare with these facts.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.netlink.caps import run_without_net_admin

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"
GENL_ID_CTRL = 0x10


def _msg(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload
    return body + b"\0" * (-len(body) % 4)


def _attr(atype: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), atype) + value + b"\0" * (-(4 + len(value)) % 4)


def _exchange(sock: socket.socket, request: bytes, until_ack: bool) -> bytes:
    """Send; collect datagrams until the ack / error / NLMSG_DONE, or the first reply."""
    sock.send(request)
    got = b""
    while True:
        data = sock.recv(65536)
        got += data
        off = 0
        while off + 16 <= len(data):
            length, mtype = struct.unpack_from("=IH", data, off)
            if mtype in (2, 3) or not until_ack:
                return got
            off += (length + 3) & ~3


def _family(sock: socket.socket, name: str) -> tuple[int, bytes]:
    req = _msg(GENL_ID_CTRL, 0x1 | 0x4, 1, struct.pack("=BBH", 3, 1, 0) + _attr(2, name.encode() + b"\0"))
    data = _exchange(sock, req, until_ack=True)
    off = 16 + 4
    while off < struct.unpack_from("=I", data)[0]:
        alen, atype = struct.unpack_from("=HH", data, off)
        if atype == 1:
            return struct.unpack_from("=H", data, off + 4)[0], data
        off += (alen + 3) & ~3
    raise SystemExit("no family id in the reply")


def _get(family: int, pid: int, tgid: bool = False) -> bytes:
    return _msg(family, 0x1, 7, struct.pack("=BBH", 1, 1, 0) + _attr(2 if tgid else 1, struct.pack("=I", pid)))


def _write(name: str, data: bytes, facts: dict[str, Any]) -> None:
    (OUT / f"{name}.bin").write_bytes(data)
    (OUT / f"{name}.json").write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    print(f"{name}: {len(data)} bytes")


def _listen_exits(sock: socket.socket, family: int, mask: str, pids: set[int], timeout: float) -> dict[int, bytes]:
    """Exit notifications of ``pids`` (raw message bytes by pid) seen before ``timeout``."""
    seen: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while pids - set(seen) and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if struct.unpack_from("=H", data, 4)[0] != family:
            continue
        # the first aggregate's pid attribute sits at a fixed place: nlmsghdr, genlmsghdr, outer nla, pid nla
        pid = struct.unpack_from("=I", data, 16 + 4 + 4 + 4)[0]
        if pid in pids:
            seen[pid] = data
    return seen


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16) as sock:
        sock.bind((0, 0))
        family, fam_reply = _family(sock, "TASKSTATS")
        _write("getfamily_taskstats", fam_reply, {"name": "TASKSTATS", "family_id": family})
        dump = _exchange(sock, _msg(GENL_ID_CTRL, 0x1 | 0x300, 2, struct.pack("=BBH", 3, 1, 0)), until_ack=True)
        _write("getfamily_dump", dump, {"contains": ["nlctrl", "TASKSTATS"]})
        _write("getfamily_enoent", _exchange(
            sock, _msg(GENL_ID_CTRL, 0x1 | 0x4, 3, struct.pack("=BBH", 3, 1, 0) + _attr(2, b"NO_SUCH_FAMILY\0")),
            until_ack=True), {"errno": "ENOENT"})

        child = subprocess.Popen(["sleep", "30"])
        try:
            time.sleep(0.2)
            _write("taskstats_pid", _exchange(sock, _get(family, child.pid), until_ack=False),
                   {"pid": child.pid, "comm": "sleep", "ppid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()})
            _write("taskstats_tgid", _exchange(sock, _get(family, child.pid, tgid=True), until_ack=False),
                   {"tgid": child.pid})
        finally:
            child.kill()
            child.wait()
        _write("taskstats_esrch", _exchange(sock, _get(family, child.pid), until_ack=False), {"errno": "ESRCH"})

        fd = os.open("/sys/fs/cgroup/cpu", os.O_RDONLY | os.O_DIRECTORY)
        req = _msg(family, 0x1, 9, struct.pack("=BBH", 4, 1, 0) + _attr(1, struct.pack("=I", fd)))
        _write("cgroupstats_v1", _exchange(sock, req, until_ack=False), {"path": "/sys/fs/cgroup/cpu"})
        os.close(fd)
        fd = os.open("/sys/fs/cgroup/unified", os.O_RDONLY | os.O_DIRECTORY)
        req = _msg(family, 0x1, 10, struct.pack("=BBH", 4, 1, 0) + _attr(1, struct.pack("=I", fd)))
        _write("cgroupstats_v2_einval", _exchange(sock, req, until_ack=False),
               {"path": "/sys/fs/cgroup/unified", "errno": "EINVAL"})
        os.close(fd)

    code = "import socket, sys; s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16); s.bind((0, 0));" \
           f" s.send(bytes.fromhex({_get(family, 1).hex()!r})); sys.stdout.write(s.recv(65536).hex())"
    eperm = run_without_net_admin(code)
    _write("taskstats_eperm", bytes.fromhex(eperm.stdout.decode()), {"errno": "EPERM"})

    mask = Path("/sys/devices/system/cpu/possible").read_text().strip()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        _exchange(sock, _msg(family, 0x1 | 0x4, 11, struct.pack("=BBH", 1, 1, 0) + _attr(3, mask.encode() + b"\0")),
                  until_ack=True)
        single = subprocess.Popen(["sh", "-c", "exit 3"])
        single.wait()
        threaded = subprocess.Popen([sys.executable, "-c", "import threading, sys, time\n"
                                     "t = threading.Thread(target=time.sleep, args=(0.2,)); t.start()\n"
                                     "time.sleep(0.05); sys.exit(5)"])
        threaded.wait()
        seen = _listen_exits(sock, family, mask, {single.pid, threaded.pid}, timeout=5.0)
        sock.settimeout(2.0)
        _exchange(sock, _msg(family, 0x1 | 0x4, 12, struct.pack("=BBH", 1, 1, 0) + _attr(4, mask.encode() + b"\0")),
                  until_ack=True)
    _write("exit_single", seen[single.pid], {"pid": single.pid, "comm": "sh", "exit_code": 3, "ppid": os.getpid()})
    _write("exit_thread_group", seen[threaded.pid],
           {"pid": threaded.pid, "exit_code": 5, "ppid": os.getpid(), "group": True})


if __name__ == "__main__":
    main()
