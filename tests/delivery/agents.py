"""Real agents in subprocesses for the delivery tests: configs in tmp dirs, bounded waits, ids read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from tests.helpers import ROOT


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def guest_events(ids: Iterable[int], source: str = "guest/delivery") -> bytes:
    return b"".join(
        orjson.dumps({"specversion": "1.0", "id": f"ev-{i}", "source": source, "type": "io.example.tick",
                      "data": {"i": i}}) + b"\n"
        for i in ids
    )


def ids_in(path: Path) -> set[str]:
    """Event ids in an NDJSON file (a torn last line from a killed writer is ignored)."""
    if not path.exists():
        return set()
    out = set()
    for line in path.read_bytes().splitlines():
        try:
            out.add(orjson.loads(line)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class Agent:
    """``python -m agent run --config NAME.toml --probes none`` in ``home``; stderr kept in NAME.N.log."""

    def __init__(self, home: Path, name: str, toml: str, *, listen: Path | None = None) -> None:
        self.home, self.name, self.listen = home, name, listen
        self.config = home / f"{name}.toml"
        self.config.write_text(toml)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.home / f"{self.name}.{self.starts}.log"

    def start(self) -> Agent:
        if self.listen is not None:
            self.listen.unlink(missing_ok=True)
        self.starts += 1
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config), "--probes", "none",
                 "--key", str(self.home / "keys" / "host.key")],
                cwd=self.home, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )
        if self.listen is not None:
            listen = self.listen
            wait_for(lambda: listen.exists() or not self.alive(), 20, f"{self.name} to listen on {listen}")
            assert self.alive(), self.log.read_text()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing gets to run on the way out."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM, wait for the exit; returns the log of this run."""
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"{self.name} did not stop on SIGTERM within {timeout}s") from None
        return self.log.read_text()


class Sender:
    """``hoststamp send --to URI`` with ``data`` on stdin (from a file), running until it has its acks."""

    count = 0

    def __init__(self, home: Path, to: str, data: bytes, timeout: float = 60) -> None:
        Sender.count += 1
        feed = home / f"send-{Sender.count}.ndjson"
        feed.write_bytes(data)
        with open(feed, "rb") as stdin:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "send", "--to", to, "--timeout", str(timeout)],
                cwd=home, env=_env(), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )

    def finish(self, timeout: float = 90) -> tuple[int, str]:
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("hoststamp send did not finish") from None
        return self.proc.returncode, err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)
