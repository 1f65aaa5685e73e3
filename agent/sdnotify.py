"""A tiny sd_notify client: tell systemd we are ready, alive, reloading or stopping.

systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) to ``Type=notify`` services; each state is one datagram of
``KEY=VALUE`` lines. ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, when set, must
be our pid) asks for ``WATCHDOG=1`` more often than that. Without the variable
every call is a no-op, so the agent runs the same under a terminal, a container
runtime or systemd. Sending never raises: a missing systemd must not stop the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_period"]

log = logging.getLogger("hoststamp.sdnotify")


def _address(raw: str) -> str | bytes | None:
    if not raw:
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock: and other forms are not used for services on this host


def watchdog_period(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half the configured timeout), or None when not asked for."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid and wpid != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends states to ``$NOTIFY_SOCKET``; does nothing when it is not set."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **states: str | int) -> bool:
        """``send(READY=1, STATUS="running")``; True when the datagram left."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in states.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
            return True
        except OSError as exc:
            if not self._warned:  # once: a vanished manager is not worth a line per second
                log.warning("sd_notify to %r failed: %s", self.address, exc.strerror or exc)
                self._warned = True
            return False

    def ready(self, status: str = "") -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older ones ignore it
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
