"""A real agent in a subprocess for the ops tests: start, wait (bounded), scrape, signal, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tests.helpers import ROOT

FIXTURE_CGROUP = ROOT / "tests" / "fixtures" / "hosts" / "hybrid-systemd" / "sys" / "fs" / "cgroup" / "unified"

T = TypeVar("T")


def wait_for(pred: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``pred`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = pred()
        except (OSError, ValueError, KeyError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def config_text(sinks: list[str], *, metrics: bool = True, interval: float = 0.2, extra: str = "",
                sink_keys: str = "") -> str:
    """Only the cgroup probe, on the fixture tree, quickly; the given file sinks; /metrics on a free port."""
    others = "".join(f"[probes.{p}]\nenabled = false\n" for p in ("lve", "mounts", "taskstats", "link"))
    body = (
        '[agent]\nstate_dir = "state"\ndrain_timeout = 5.0\n'
        f'[probes.cgroup]\nroot = "{FIXTURE_CGROUP}"\ninterval = {interval}\njitter = 0.0\n'
        "[probes.cgroup.watch]\nenabled = false\n"
        f"{others}"
        + "".join(f'[[sinks]]\nuri = "{u}"\n{sink_keys}' for u in sinks)
        + ('[metrics]\nlisten = "127.0.0.1:0"\n' if metrics else "")
        + extra
    )
    return body


class AgentProcess:
    """``python -m agent run --config FILE`` in ``cwd``; output in files so pipes never fill up."""

    def __init__(self, cwd: Path, config: Path, *, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), run_args: tuple[str, ...] = ()) -> None:
        self.cwd = cwd
        self.config = config
        self.stdout = (cwd / "agent.stdout").open("wb")
        self.stderr_path = cwd / "agent.stderr"
        self.stderr = self.stderr_path.open("wb")
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            if env is None or k not in env:
                full_env.pop(k, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", *args, "run", "--config", str(config), *run_args],
            cwd=cwd, stdout=self.stdout, stderr=self.stderr, env=full_env,
        )

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        return dict(orjson.loads((self.cwd / "state" / "status.json").read_bytes()))

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        """Until the status file exists and says so (the signal handlers are installed before it is written)."""

        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited early ({self.proc.returncode}):\n{self.log()}")
            doc = self.status()
            return doc if doc.get("pid") == self.proc.pid else None

        return wait_for(ready, timeout, "the agent's status file")

    def metrics_url(self) -> str:
        return str(wait_for(lambda: self.status().get("metrics"), 10.0, "the metrics URL"))

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url(), timeout=5) as resp:
            return str(resp.read().decode())

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"agent did not stop within {timeout:g} s:\n{self.log()}") from None
        finally:
            self.stdout.close()
            self.stderr.close()

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.stdout.close()
        self.stderr.close()


def sequences(path: Path) -> list[int]:
    """The ``sequence`` of every complete line of an NDJSON file, in file order."""
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            out.append(int(orjson.loads(line)["sequence"]))
    return out


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def counters_add_up(sink: dict[str, Any]) -> bool:
    """A sink's counters in the status, as docs/operating.md states them: enqueued = sent + dropped + depth + in
    hand."""
    return bool(sink["enqueued"] == sink["sent"] + sum(sink["dropped"].values()) + sink["depth"] + sink["in_hand"])
