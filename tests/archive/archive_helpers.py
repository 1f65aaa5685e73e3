"""Helpers for archive tests: real signed events, a settable clock, writing an archive."""

from __future__ import annotations

from pathlib import Path

import orjson

from agent.archive.policy import ArchiveOptions
from agent.archive.writer import ArchiveWriter
from agent.signing.event import sign_event
from agent.signing.keys import SigningKey

SOURCE = "hoststamp://test-host/probe/cgroup"


def make_event(key: SigningKey, seq: int, *, source: str = SOURCE, pad: int = 0) -> bytes:
    """One signed event body, as the pipeline emits it (no newline)."""
    ev = {
        "specversion": "1.0",
        "id": f"ev-{source.rsplit('/', 1)[-1]}-{seq}",
        "source": source,
        "type": "io.hoststamp.host.v1.cgroup",
        "subject": "/system.slice",
        "time": "2026-11-22T01:00:00Z",
        "datacontenttype": "application/json",
        "data": {"probeSource": "test", "inputs": ["memory.current"], "output": {"n": seq, "pad": "x" * pad}},
        "hostid": "test-host",
        "hostreceivedat": "2026-11-22T01:00:00.000001Z",
        "sequence": str(seq),
    }
    sign_event(ev, key, ["hostid", "hostreceivedat", "sequence"])
    return orjson.dumps(ev)


def events(key: SigningKey, start: int, count: int, **kw: object) -> list[bytes]:
    return [make_event(key, s, **kw) for s in range(start, start + count)]  # type: ignore[arg-type]


class Clock:
    """A settable clock for age-driven behaviour."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def write_archive(root: Path, key: SigningKey, batches: list[list[bytes]], **opts: object) -> ArchiveWriter:
    """Write ``batches`` to a fresh archive and close it."""
    w = ArchiveWriter(root, key, ArchiveOptions(**opts))  # type: ignore[arg-type]
    w.open()
    for b in batches:
        w.append(b)
    w.close()
    return w

#: the segment size of :func:`sealed_archive`: 10 events of :func:`events` each
SEGMENT_BYTES = 8000


def sealed_archive(root: Path, key: SigningKey) -> Path:
    """4 closed segments of 10 events and an open one of 5, all sealed, at ``root``."""
    evs = events(key, 1, 45)
    write_archive(root, key, [evs[i:i + 10] for i in range(0, 40, 10)] + [evs[40:]],
                  segment_max_bytes=SEGMENT_BYTES, compression="none", checkpoint_every=7)
    return root
