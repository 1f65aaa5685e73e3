"""What the agent looks like from outside: a view for /metrics, a status file for ``hoststamp status``.

The agent builds an :class:`AgentView` on demand (a scrape, or once a second
for the status file); nothing on the hot path does any of this. The status file
(``STATE_DIR/status.json``) is rewritten atomically (temp file, rename), so a
reader sees the previous or the next version, never half of one.
:func:`render` turns it into the at-a-glance table ``hoststamp status`` prints.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import _native
from .hostfs.reader import read_small
from .pipeline.queue import SinkQueue
from .pipeline.stats import PipelineStats, SinkKey, SinkStats, sink_label
from .transport.uri import redact

log = logging.getLogger("hoststamp")

__all__ = [
    "STATUS_FILE",
    "AgentView",
    "ListenerView",
    "QueueCounts",
    "SinkView",
    "StatusFile",
    "StatusReport",
    "dir_bytes",
    "listener_view",
    "read_status",
    "render",
    "sink_views",
    "snapshot",
    "write_status",
]

STATUS_FILE = "status.json"


@dataclass(frozen=True, slots=True)
class SinkView:
    """One sink, summed over every generation that still has a queue for it."""

    #: what metrics and the status show: the URI with any password masked, numbered (`` #2``) when another
    #: sink shows the same
    uri: str
    depth: int
    capacity: int
    enqueued: int
    dropped: Mapping[str, int]
    stats: SinkStats
    #: bytes in the sink's spool directory, when it has one
    spool_bytes: int | None = None
    #: True while a previous configuration's queue still drains into it
    draining: bool = False
    #: times a producer waited for room (overflow ``block``): backpressure from this sink
    blocked: int = 0
    #: events the sink's worker took from the queue and is still sending (retrying, while the sink is down)
    in_hand: int = 0
    #: the spool's bound in bytes (``spool_max_bytes``), when the sink has one: its backlog's bound, which
    #: ``capacity`` (events in memory) is not
    spool_capacity: int | None = None


@dataclass(frozen=True, slots=True)
class ListenerView:
    uri: str
    accepted: int = 0
    duplicates: int = 0
    dropped: int = 0
    connections: int = 0
    connections_open: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    #: takes events now (listening; a NATS listener connected and consuming), and why not
    healthy: bool = True
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class AgentView:
    pipeline: PipelineStats
    probes: tuple[str, ...]
    sinks: tuple[SinkView, ...]
    listeners: tuple[ListenerView, ...]
    host_id: str
    keyid: str
    config: str | None
    started_at: float
    generation: int = 1
    reloads_ok: int = 0
    reloads_failed: int = 0
    last_reload_ok: bool = True
    last_reload_error: str | None = None
    #: the failed reload's configuration runs, without what failed
    last_reload_applied: bool = False
    #: where /metrics is served, when it is
    metrics_url: str | None = None


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files in ``path`` and its subdirectories (0 if it does not exist)."""
    total = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                    elif entry.is_dir(follow_symlinks=False):
                        total += dir_bytes(Path(entry.path))
                except OSError:
                    continue
    except OSError:
        return 0
    return total


def snapshot(view: AgentView, *, now: float | None = None, pid: int | None = None) -> dict[str, Any]:
    """The status file's document (plain JSON types only)."""
    st = view.pipeline
    probes = {}
    for name in view.probes:
        p = st.probes.get(name)
        probes[name] = {
            "runs": p.runs if p else 0,
            "failures": p.failures if p else 0,
            "readings": p.readings if p else 0,
            "last_duration": round(p.last_duration, 6) if p else 0.0,
            "last_success": p.last_success if p else True,
            "last_error": p.last_error if p else None,
        }
    return {
        "version": 1,
        "pid": os.getpid() if pid is None else pid,
        "written_at": time.time() if now is None else now,
        "started_at": view.started_at,
        "host_id": view.host_id,
        "keyid": view.keyid,
        "config": view.config,
        "generation": view.generation,
        "metrics": view.metrics_url,
        "reloads": {"ok": view.reloads_ok, "failed": view.reloads_failed, "last_ok": view.last_reload_ok,
                    "last_error": view.last_reload_error, "last_applied": view.last_reload_applied},
        "signed": st.signed,
        "rejected": st.rejected,
        "native": _native.parts(),
        "probes": probes,
        "sinks": [
            {
                "uri": s.uri,
                "healthy": s.stats.healthy,
                "depth": s.depth,
                "in_hand": s.in_hand,
                "capacity": s.capacity,
                "enqueued": s.enqueued,
                "blocked": s.blocked,
                "sent": s.stats.sent,
                "duplicates": s.stats.duplicates,
                "dropped": dict(s.dropped),
                "send_errors": s.stats.send_errors,
                "last_error": s.stats.last_error,
                "spool_bytes": s.spool_bytes,
                "spool_capacity": s.spool_capacity,
                "draining": s.draining,
            }
            for s in view.sinks
        ],
        "listeners": [
            {
                "uri": li.uri,
                "accepted": li.accepted,
                "duplicates": li.duplicates,
                "dropped": li.dropped,
                "connections": li.connections,
                "connections_open": li.connections_open,
                "rejected": dict(li.rejected),
                "healthy": li.healthy,
                "last_error": li.last_error,
            }
            for li in view.listeners
        ],
    }


def write_status(path: Path, doc: Mapping[str, Any]) -> None:
    """Atomically replace ``path`` with ``doc`` (no fsync: it is rewritten every second)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, path)


class StatusFile:
    """``STATE_DIR/status.json``, rewritten as the agent runs; a failure is logged once until it works again."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATUS_FILE
        self._failed = False

    def write(self, view: AgentView, *, running: bool = True) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_status(self.path, {**snapshot(view), "running": running})
            self._failed = False
        except OSError as exc:
            if not self._failed:
                log.warning("cannot write %s: %s", self.path, exc.strerror or exc)
            self._failed = True


def read_status(path: Path) -> dict[str, Any]:
    """The document, or OSError/ValueError when there is none or it is unreadable."""
    doc = orjson.loads(read_small(str(path), 64 << 20))  # a FIFO there is refused (EINVAL), never waited on
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ValueError(f"{path}: not a hoststamp status file")
    return doc


@dataclass(frozen=True, slots=True)
class StatusReport:
    text: str
    healthy: bool


def _ago(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render(doc: Mapping[str, Any], *, now: float | None = None, stale_after: float = 5.0) -> StatusReport:
    """Per-probe and per-sink health at a glance; unhealthy when anything failed or the file is stale."""
    now = time.time() if now is None else now
    age = now - float(doc.get("written_at", 0))
    stopped = doc.get("running") is False
    stale = age > stale_after and not stopped
    healthy = not stale and not stopped
    # a stopped agent ran from its start until its last status was written
    ran = (float(doc.get("written_at", now)) if stopped else now) - float(doc.get("started_at", now))
    head = (f"hoststamp pid {doc.get('pid')}: {'ran' if stopped else 'up'} {_ago(ran)}, "
            f"{doc.get('signed', 0)} events signed, host {doc.get('host_id')}, generation {doc.get('generation')}")
    lines = [head]
    if doc.get("config") or doc.get("metrics"):
        lines.append("  ".join(f"{k} {doc[k]}" for k in ("config", "metrics") if doc.get(k)))
    if "native" in doc:
        built = [name for name, on in doc["native"].items() if on]
        lines.append(f"native parts: {', '.join(built) if built else 'none (signing and stamping in Python)'}")
    if stopped:
        lines.append(f"STOPPED {_ago(age)} ago (this is its last status)")
    elif stale:
        lines.append(f"STALE: status last written {_ago(age)} ago; is the agent running?")
    reloads = doc.get("reloads", {})
    if not reloads.get("last_ok", True):
        kept = ("running its configuration without what failed" if reloads.get("last_applied")
                else "running the previous configuration")
        lines.append(f"last reload FAILED ({kept}): {reloads.get('last_error')}")
    rows = [["PROBE", "STATE", "RUNS", "FAILURES", "LAST", "ERROR"]]
    for name, p in sorted(doc.get("probes", {}).items()):
        state = "starting" if not p["runs"] else ("ok" if p["last_success"] else "FAILING")
        healthy &= state != "FAILING"
        rows.append([name, state, str(p["runs"]), str(p["failures"]), f"{p['last_duration'] * 1000:.1f}ms",
                     p["last_error"] or ""])
    lines += ["", *(_table(rows) if len(rows) > 1 else ["no probes enabled"])]
    rows = [["SINK", "STATE", "QUEUE", "SENT", "DROPPED", "SPOOL", "ERROR"]]
    for s in doc.get("sinks", []):
        state = ("up" if s["healthy"] else "DOWN") + (" (draining)" if s.get("draining") else "")
        healthy &= bool(s["healthy"])
        spool = "" if s.get("spool_bytes") is None else str(s["spool_bytes"])
        rows.append([s["uri"], state, f"{s['depth']}/{s['capacity']}", str(s["sent"]),
                     str(sum(s["dropped"].values())), spool, s["last_error"] or "" if not s["healthy"] else ""])
    lines += ["", *_table(rows)]
    if doc.get("listeners"):
        rows = [["LISTENER", "STATE", "OPEN", "CONNECTIONS", "ACCEPTED", "DUPLICATES", "REFUSED", "ERROR"]]
        for li in doc["listeners"]:
            up = li.get("healthy", True)
            healthy &= bool(up)
            refused = ",".join(f"{k}={v}" for k, v in sorted(li["rejected"].items()) if v) or "0"
            rows.append([li["uri"], "up" if up else "DOWN", str(li["connections_open"]), str(li["connections"]),
                         str(li["accepted"]), str(li["duplicates"]), refused, "" if up else li.get("last_error") or ""])
        lines += ["", *_table(rows)]
    return StatusReport("\n".join(lines), healthy)


@dataclass(slots=True)
class QueueCounts:
    """Counters of one sink's queues, summed (the live ones, or those retired by reloads)."""

    enqueued: int = 0
    blocked: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, q: SinkQueue) -> None:
        self.enqueued += q.enqueued
        self.blocked += getattr(q, "blocked", 0)
        self.dropped.update(q.dropped)


def sink_views(
    live: Iterable[tuple[SinkKey, SinkQueue, int | None, bool, int]],
    stats: PipelineStats,
    retired: Mapping[SinkKey, QueueCounts],
) -> tuple[SinkView, ...]:
    """One :class:`SinkView` per sink from ``(key, queue, spool_bytes, draining, in_hand)`` entries, ``key``
    being the sink's :data:`~agent.pipeline.stats.SinkKey`.

    A sink may have two live queues while a reload drains the old one;
    ``retired`` holds the counts of queues already gone, so counters never go back.
    """
    acc: dict[SinkKey, tuple[QueueCounts, dict[str, Any]]] = {}
    for key, q, spool, draining, in_hand in live:
        counts, a = acc.setdefault(key, (QueueCounts(), {"depth": 0, "capacity": 0, "spool": None,
                                                         "draining": False, "in_hand": 0,
                                                         "spool_capacity": None}))
        counts.add(q)
        a["depth"] += len(q)
        a["in_hand"] += in_hand
        if isinstance(cap := getattr(getattr(q, "spool", None), "max_bytes", None), int):
            a["spool_capacity"] = cap
        a["capacity"] = max(a["capacity"], q.maxsize)
        a["spool"] = spool if spool is not None else a["spool"]
        a["draining"] |= draining
    out = []
    labels: set[str] = set()
    for key, (counts, a) in acc.items():
        old = retired.get(key, QueueCounts())
        # the key is what the label shows (the masked URI, numbered from the second sink showing it); should two
        # keys show alike (while a reload drains, a URI that itself ends in " #2", say), the later is numbered on
        shown, nth = redact(key[0]), key[1]
        label = sink_label((shown, nth))
        while label in labels:
            nth += 1
            label = sink_label((shown, nth))
        labels.add(label)
        out.append(SinkView(label, a["depth"], a["capacity"], counts.enqueued + old.enqueued,
                            dict(counts.dropped + old.dropped), stats.sink(*key), a["spool"], a["draining"],
                            counts.blocked + old.blocked, a["in_hand"], a["spool_capacity"]))
    return tuple(out)


def listener_view(uri: str, live: Iterable[Any], retired: ListenerView | None = None,
                  failed: str | None = None) -> ListenerView:
    """Sum receiver stats (objects with ReceiverStats' fields) and a retired total into one view; ``failed``:
    why the listener could not listen (after a reload)."""
    v = retired or ListenerView(uri)
    accepted, dup, dropped, conns, open_ = v.accepted, v.duplicates, v.dropped, v.connections, 0
    rejected: Counter[str] = Counter(v.rejected)
    error = failed
    for s in live:
        if not getattr(s, "healthy", True) and error is None:
            error = getattr(s, "last_error", None) or "not taking events"
        accepted += s.accepted
        dup += s.duplicates
        dropped += s.dropped
        conns += s.connections
        open_ += s.connections_open
        rejected.update(s.rejected)
    return ListenerView(redact(uri), accepted, dup, dropped, conns, open_, dict(rejected), error is None,
                        None if error is None else redact(error))
