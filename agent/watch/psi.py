"""PSI triggers: the configured form, the line written to a pressure file, and why a kernel refused one.

A trigger is written as ``"RESOURCE some|full STALL_US WINDOW_US"`` in the
configuration (``"cpu some 150000 1000000"``: more than 150 ms of stall in
any 1 s window). The kernel takes ``"some 150000 1000000"`` written to the
cgroup's ``cpu.pressure`` and signals POLLPRI on that fd when it fires (at
most once per window). Windows run from 500 ms to 10 s; a writer without
CAP_SYS_RESOURCE may only use windows that are whole multiples of 2 s.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

__all__ = ["RESOURCES", "PsiTrigger", "parse_trigger", "refusal"]

RESOURCES: tuple[str, ...] = ("cpu", "memory", "io")
_KINDS = ("some", "full")
_WINDOW_MIN_US = 500_000
_WINDOW_MAX_US = 10_000_000


@dataclass(frozen=True, slots=True)
class PsiTrigger:
    resource: str
    kind: str
    stall_us: int
    window_us: int

    @property
    def file(self) -> str:
        return f"{self.resource}.pressure"

    @property
    def spec(self) -> str:
        return f"{self.resource} {self.kind} {self.stall_us} {self.window_us}"

    def line(self) -> bytes:
        """What is written to the pressure file to register the trigger."""
        return f"{self.kind} {self.stall_us} {self.window_us}".encode()

    def as_dict(self) -> dict[str, Any]:
        return {"resource": self.resource, "kind": self.kind, "stall_us": self.stall_us,
                "window_us": self.window_us}


def parse_trigger(text: str) -> PsiTrigger:
    """``"cpu some 150000 1000000"`` -> :class:`PsiTrigger`; ``ValueError`` naming what is wrong."""
    parts = text.split()
    if len(parts) != 4:
        raise ValueError(f"PSI trigger {text!r}: expected 'RESOURCE some|full STALL_US WINDOW_US'")
    resource, kind, stall, window = parts
    if resource not in RESOURCES:
        raise ValueError(f"PSI trigger {text!r}: resource must be one of {', '.join(RESOURCES)}")
    if kind not in _KINDS:
        raise ValueError(f"PSI trigger {text!r}: expected 'some' or 'full', got {kind!r}")
    if not (stall.isdigit() and window.isdigit()):
        raise ValueError(f"PSI trigger {text!r}: stall and window are whole microseconds")
    stall_us, window_us = int(stall), int(window)
    if not _WINDOW_MIN_US <= window_us <= _WINDOW_MAX_US:
        raise ValueError(f"PSI trigger {text!r}: the window must be 500000..10000000 µs")
    if not 0 < stall_us <= window_us:
        raise ValueError(f"PSI trigger {text!r}: the stall must be more than 0 and at most the window")
    return PsiTrigger(resource, kind, stall_us, window_us)


def refusal(trigger: PsiTrigger, exc: OSError) -> str:
    """A message explaining why registering ``trigger`` failed."""
    head = f"PSI trigger {trigger.spec!r} not registered"
    if exc.errno == errno.EINVAL and trigger.window_us % 2_000_000:
        return (f"{head}: the kernel refused it (EINVAL); without CAP_SYS_RESOURCE a trigger's window must be"
                " a multiple of 2 s")
    if exc.errno == errno.EINVAL:
        return f"{head}: the kernel refused it (EINVAL)"
    if exc.errno == errno.ENOENT:
        return f"{head}: no {trigger.file} (kernel without PSI, or booted with psi=0)"
    if exc.errno == errno.EOPNOTSUPP:
        return f"{head}: pressure triggers are not supported here (EOPNOTSUPP)"
    return f"{head}: {exc.strerror or exc}"
