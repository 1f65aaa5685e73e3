"""``hoststamp config check``: every problem of a configuration file, not just the first.

:func:`agent.config.parse` stops at the first error, which is right for
starting the agent. Here each unit (``[agent]``, each ``[probes.NAME]``, each
``[[sinks]]`` and ``[[listeners]]`` entry, ``[metrics]``) is checked on its
own with the same code, and within a unit a key that was found bad is set
aside and the unit checked again, so one pass reports every bad key. Beyond
parsing it checks listener URIs, that the trusted keys listeners name can be
read, and that some sink is configured. Nothing is opened or bound, and
nothing is read besides the file and those keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import config as config_mod
from . import schema
from .errors import ConfigError, redact, shown
from .receiver.server import HEARTBEAT
from .transport.uri import SCHEMES

__all__ = ["Problem", "check_document", "check_file"]


@dataclass(frozen=True, slots=True)
class Problem:
    file: str | None
    key: str | None
    reason: str
    #: "error" makes the file invalid; "warning" is worth knowing but valid
    severity: str = "error"

    def __str__(self) -> str:
        where = "".join(f"{shown(p)}: " for p in (self.file, self.key) if p)
        return redact(f"{where}{'warning: ' if self.severity == 'warning' else ''}{self.reason}")


_SEGMENT = re.compile(r"([^.\[]+)")
_PART = re.compile(r"[^.\[\]]+")


def _direct_key(prefix: str, key: str | None) -> str | None:
    """``probes.cgroup`` + ``probes.cgroup.root.x`` -> ``root``; None if ``key`` is not inside ``prefix``."""
    if not key or not key.startswith(prefix + "."):
        return None
    m = _SEGMENT.match(key[len(prefix) + 1:])
    return m.group(1) if m else None


def _unit(problems: list[Problem], table: Any, prefix: str, file: str | None,
          build: Callable[[Mapping[str, Any]], object]) -> None:
    """Build one unit, setting aside each bad key it reports until it builds or cannot be narrowed down."""
    if not isinstance(table, Mapping):
        try:
            build(table)
        except ConfigError as exc:
            problems.append(Problem(file, exc.key, exc.reason))
        return
    left = dict(table)
    seen: set[str | None] = set()
    for _ in range(_count_keys(table) + 1):
        try:
            build(left)
            return
        except ConfigError as exc:
            if exc.key in seen:  # e.g. a bad required key, set aside, is now "missing": said already
                return
            seen.add(exc.key)
            problems.append(Problem(file, exc.key, exc.reason))
            if not _set_aside(left, prefix, exc.key):
                return


def _count_keys(table: Mapping[str, Any]) -> int:
    """Keys in ``table`` and in the tables nested in it: how many can be set aside, at most."""
    return sum(1 + (_count_keys(v) if isinstance(v, Mapping) else 0) for v in table.values())


def _set_aside(left: dict[str, Any], prefix: str, key: str | None) -> bool:
    """Remove ``key`` (under ``prefix``) from ``left``, at whatever depth of nested tables it is (each table on
    the way copied, never changed in place); False if it is not there."""
    first = _direct_key(prefix, key)
    if first is None or key is None:
        return False
    parts = _PART.findall(key[len(prefix) + 1:])  # "watch.psi_paths[2]" -> watch, psi_paths, 2
    node = left
    for i, part in enumerate(parts):
        if part not in node:
            return False
        below = node[part]
        if i == len(parts) - 1 or not isinstance(below, Mapping) or parts[i + 1] not in below:
            del node[part]
            return True
        node[part] = dict(below)
        node = node[part]
    return False


def check_document(doc: Mapping[str, Any], *, file: str | None = None,
                   env: Mapping[str, str] | None = None) -> list[Problem]:
    problems: list[Problem] = []
    top = config_mod._TOP_KEYS
    for key in doc:
        if key not in top:
            problems.append(Problem(file, key, f"unknown key (allowed at top level: {', '.join(top)})"))

    _unit(problems, doc.get("agent", {}), "agent", file,
          lambda t: config_mod.parse({"agent": t}, file=file, env=env or {}))

    probes = doc.get("probes", {})
    if isinstance(probes, Mapping):
        for name, table in probes.items():
            _unit(problems, table, f"probes.{name}", file, partial(_probe, name=name, file=file))
    else:
        problems.append(Problem(file, "probes", "expected a table of [probes.NAME] tables"))

    sinks = doc.get("sinks", [])
    if isinstance(sinks, list):
        for i, table in enumerate(sinks):
            _unit(problems, table, f"sinks[{i}]", file, partial(config_mod.endpoint, prefix=f"sinks[{i}]", file=file))
    else:
        problems.append(Problem(file, "sinks", "expected an array of tables ([[sinks]])"))
    if isinstance(sinks, list) and not sinks:
        problems.append(Problem(file, "sinks", "no [[sinks]]: `hoststamp run` will need --sink URI", "warning"))
    for i, table in enumerate(sinks if isinstance(sinks, list) else []):
        ack = table.get("ack_timeout") if isinstance(table, Mapping) else None
        if (isinstance(ack, (int, float)) and not isinstance(ack, bool) and 0 < ack <= HEARTBEAT
                and str(table.get("uri", "")).split(":", 1)[0] in SCHEMES):
            problems.append(Problem(file, f"sinks[{i}].ack_timeout", f"{ack:g} s is not longer than the "
                                    f"receiver's heartbeat ({HEARTBEAT:g} s): a downstream still making events "
                                    "durable may be taken for dead and sent everything again", "warning"))
    uris = [t.get("uri") for t in sinks if isinstance(t, Mapping)] if isinstance(sinks, list) else []
    for i, uri in enumerate(uris):
        if uri is not None and uri in uris[:i]:
            problems.append(Problem(file, f"sinks[{i}].uri", f"{uri!r} is also sinks[{uris.index(uri)}]: "
                                    "both would write the same place", "warning"))

    listeners = doc.get("listeners", [])
    if isinstance(listeners, list):
        for i, table in enumerate(listeners):
            _unit(problems, table, f"listeners[{i}]", file, partial(_listener, prefix=f"listeners[{i}]", file=file))
        addresses = [t.get("uri") if isinstance(t, Mapping) else None for t in listeners]
        problems.extend(Problem(file, key, reason) for key, reason in config_mod.repeated_addresses(addresses))
    else:
        problems.append(Problem(file, "listeners", "expected an array of tables ([[listeners]])"))

    _unit(problems, doc.get("metrics", {}), "metrics", file,
          lambda t: schema.build(config_mod.MetricsConfig, t, prefix="metrics", file=file))
    return problems


def _probe(table: Mapping[str, Any], *, name: str, file: str | None) -> object:
    return config_mod.parse({"probes": {name: table}}, file=file, env={})


def _listener(table: Mapping[str, Any], *, prefix: str, file: str | None) -> object:
    return config_mod.listener(table, prefix=prefix, file=file)


def check_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the file at ``path``; an empty list means it loads."""
    p = str(path)
    try:
        doc = config_mod.read_document(path)
    except ConfigError as exc:
        return [Problem(p, None, exc.reason)]
    return check_document(doc, file=p, env=env)
