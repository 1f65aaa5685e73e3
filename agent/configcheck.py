"""``hoststamp config check``: every problem of a configuration file, not just the first.

:func:`agent.config.parse` stops at the first error, which is right for
starting the agent. Here each unit (``[agent]``, each ``[probes.NAME]``, each
``[[sinks]]`` and ``[[listeners]]`` entry, ``[metrics]``) is checked on its
own with the same code, and within a unit a key that was found bad is set
aside and the unit checked again, so one pass reports every bad key. Beyond
parsing it checks listener URIs, that the trusted keys listeners name can be
read, that no file is where a sink's ``spool`` or ``[agent] state_dir`` needs a
directory (``run`` asks :func:`directory_problem` the same before it makes
them), that a unix or Firecracker listener's socket file can be made where it
goes (``run`` asks :func:`socket_problem` the same before it starts), and that
some sink is configured; it warns about what runs but is not what was meant.
Nothing is opened (a path is only looked at with stat), made or bound, and
nothing is read besides the file and those keys.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import schema
from .configkeys import locate, shown_key
from .errors import ConfigError, SigningError, redact, shown
from .receiver.server import HEARTBEAT
from .signing.keys import load_signing_key
from .transport.uri import SCHEMES, FcVsockEndpoint, UnixEndpoint, parse_endpoint

__all__ = ["SPOOL", "STATE_DIR", "Problem", "check_document", "check_file", "directory_problem", "socket_problem"]


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


def _unit(problems: list[Problem], table: Any, prefix: str, file: str | None,
          build: Callable[[Mapping[str, Any]], object], said: Collection[str] = ()) -> None:
    """Build one unit, setting aside each bad key it reports until it builds or cannot be narrowed down; a key
    in ``said`` (one holding a NUL character) was reported already, and is only set aside."""
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
            where = locate(left, prefix, exc.key) if exc.key is not None else None
            key = where.shown if where is not None else exc.key
            if key in seen:  # e.g. a bad required key, set aside, is now "missing": said already
                return
            seen.add(key)
            if key not in said:
                problems.append(Problem(file, key, exc.reason))
            if where is None or not _set_aside(left, where.path):
                return


def _count_keys(table: Mapping[str, Any]) -> int:
    """Keys in ``table`` and in the tables nested in it: how many can be set aside, at most."""
    return sum(1 + (_count_keys(v) if isinstance(v, Mapping) else 0) for v in table.values())


def _set_aside(left: dict[str, Any], path: tuple[str | int, ...]) -> bool:
    """Remove the key at ``path`` (an item of an array: the array's key) from ``left``, at whatever depth of
    nested tables it is (each table on the way copied, never changed in place); False if it cannot be."""
    while path and isinstance(path[-1], int):
        path = path[:-1]
    if not path or not all(isinstance(part, str) for part in path):
        return False
    node = left
    for part in path[:-1]:
        below = node.get(str(part))
        if not isinstance(below, Mapping):
            return False
        copy = node[str(part)] = dict(below)
        node = copy
    if path[-1] not in node:
        return False
    del node[str(path[-1])]
    return True


def check_document(doc: Mapping[str, Any], *, file: str | None = None,
                   env: Mapping[str, str] | None = None) -> list[Problem]:
    # a NUL character first, wherever it is: the units below (as `run`) would stop at the first one, or take it
    nul = [_shown(doc, k) for k in config_mod.nul_keys(doc)]
    problems = [Problem(file, key, config_mod.NUL_REASON) for key in nul]
    top = config_mod._TOP_KEYS
    for key in doc:
        if key not in top and shown_key(key) not in nul:
            problems.append(Problem(file, shown_key(key), f"unknown key (allowed at top level: {', '.join(top)})"))

    agent = doc.get("agent", {})
    _unit(problems, agent, "agent", file, lambda t: config_mod.parse({"agent": t}, file=file, env=env or {}), nul)
    if isinstance(agent, Mapping):
        _directory(problems, agent.get("state_dir"), "agent.state_dir", file, STATE_DIR)
        _host_key(problems, agent.get("key"), file)

    probes = doc.get("probes", {})
    if isinstance(probes, Mapping):
        for name, table in probes.items():
            if "\0" not in name:  # else said above
                _unit(problems, table, f"probes.{shown_key(name)}", file, partial(_probe, name=name, file=file),
                      nul)
    else:
        problems.append(Problem(file, "probes", "expected a table of [probes.NAME] tables"))

    sinks = doc.get("sinks", [])
    if isinstance(sinks, list):
        for i, table in enumerate(sinks):
            _unit(problems, table, f"sinks[{i}]", file, partial(config_mod.endpoint, prefix=f"sinks[{i}]", file=file),
                  nul)
            if isinstance(table, Mapping):
                _directory(problems, table.get("spool"), f"sinks[{i}].spool", file, SPOOL)
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
            _unit(problems, table, f"listeners[{i}]", file, partial(_listener, prefix=f"listeners[{i}]", file=file),
                  nul)
            if isinstance(table, Mapping):
                _socket_file(problems, table.get("uri"), f"listeners[{i}].uri", file)
        addresses = [t.get("uri") if isinstance(t, Mapping) else None for t in listeners]
        problems.extend(Problem(file, key, reason) for key, reason in config_mod.repeated_addresses(addresses))
        named = [(t.get("uri"), t) if isinstance(t, Mapping) else (None, {}) for t in listeners]
        bad = {p.key for p in problems}
        problems.extend(Problem(file, key, reason, "warning") for key, reason in config_mod.unused_keys(named)
                        if key not in bad)
    else:
        problems.append(Problem(file, "listeners", "expected an array of tables ([[listeners]])"))

    _unit(problems, doc.get("metrics", {}), "metrics", file,
          lambda t: schema.build(config_mod.MetricsConfig, t, prefix="metrics", file=file), nul)
    return problems


def _shown(doc: Mapping[str, Any], key: str) -> str:
    """``key`` (of :func:`agent.config.nul_keys`) as a problem names it, as :func:`agent.config.parse` would."""
    where = locate(doc, "", key)
    return where.shown if where is not None else key


#: what a problem with ``[agent] state_dir`` or a sink's ``spool`` says first (with the path), here and in ``run``
STATE_DIR = "cannot use the state directory {}"
SPOOL = "spool {}"


def _directory(problems: list[Problem], path: object, key: str, file: str | None, what: str) -> None:
    if not isinstance(path, str) or not path or "\0" in path or any(p.key == key for p in problems):
        return  # no value, or one found bad already
    if (reason := directory_problem(path, what)) is not None:
        problems.append(Problem(file, key, reason))


def directory_problem(path: str, what: str) -> str | None:
    """Why no directory can be found or made at ``path`` (``what``, with the path, then the reason), when
    something other than a directory is there or above it; None when one is there, or can be made as far as stat
    can tell. ``run`` asks this before it makes a state directory or a spool, so that it refuses one as the check
    does. Only looked at (stat): nothing is made, and nothing is opened (a FIFO would block)."""
    if (found := _in_the_way(Path(path))) is None:
        return None
    kind, at = found
    where = "" if at == Path(path) else f" at {at}"
    return f"{what.format(path)}: not a directory ({kind} is in the way{where})"


def _in_the_way(path: Path) -> tuple[str, Path] | None:
    """What is at ``path``, or at the nearest of its parents that exists, when that is not a directory (a regular
    file, a FIFO, a symbolic link to nothing or in a loop, ...), and where; None when it is a directory, nothing
    is there, or stat cannot tell."""
    for at in (path, *path.parents):
        try:
            mode = os.stat(at).st_mode
        except FileNotFoundError:
            if os.path.islink(at):
                return "a symbolic link to nothing", at
            continue
        except NotADirectoryError:  # a parent is not a directory: found further up
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # this link loops, or one above it does: found further up
                if os.path.islink(at):
                    return "a symbolic link that loops", at
                continue
            return None  # not allowed to look (the agent may run as another user): left to `run`
        if stat.S_ISDIR(mode):
            return None
        return next((kind for test, kind in _KINDS if test(mode)), "a device"), at
    return None


_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


def _socket_file(problems: list[Problem], uri: object, key: str, file: str | None) -> None:
    if not isinstance(uri, str) or any(p.key == key for p in problems):
        return
    if (reason := socket_problem(uri)) is not None:
        problems.append(Problem(file, key, reason))


def socket_problem(uri: str) -> str | None:
    """Why the socket file of a ``unix:`` or ``fcvsock:`` listener at ``uri`` cannot be made: something other than
    a socket is at its path (a socket, live or left over, is for ``run`` to sort out), or its directory is missing
    or is no directory; None when it can be, as far as stat can tell, or ``uri`` names no socket file. ``run``
    asks this before it starts, so that it refuses such a listener as the check does. Only looked at (lstat,
    stat): nothing is opened, connected to or made."""
    try:
        ep = parse_endpoint(uri, listen=True)
    except ConfigError:
        return None
    if isinstance(ep, FcVsockEndpoint):
        path = ep.listen_path
    elif isinstance(ep, UnixEndpoint) and not ep.abstract:
        path = ep.path
    else:
        return None
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None  # not allowed to look: left to `run`
    else:
        if stat.S_ISSOCK(mode):
            return None
        kind = (("a symbolic link" if os.path.exists(path) else "a symbolic link to nothing") if stat.S_ISLNK(mode)
                else next((kind for test, kind in _KINDS if test(mode)), "a device"))
        return f"cannot listen at {path}: {kind} is there, not a socket"
    parent = os.path.dirname(path) or "."
    reason = directory_problem(parent, f"cannot listen at {path}: directory {{}}")
    if reason is None:
        try:
            os.stat(parent)
        except FileNotFoundError:
            reason = f"cannot listen at {path}: directory {parent} does not exist"
        except OSError:
            pass
    return reason


def _probe(table: Mapping[str, Any], *, name: str, file: str | None) -> object:
    return config_mod.parse({"probes": {name: table}}, file=file, env={})


def _listener(table: Mapping[str, Any], *, prefix: str, file: str | None) -> object:
    return config_mod.listener(table, prefix=prefix, file=file)


def _host_key(problems: list[Problem], path: Any, file: str | None) -> None:
    """The host key `run` would load from the configuration: ``HOSTSTAMP_KEY`` when set, else ``[agent] key``
    when the file names one. As `run` refuses it (missing, readable by others, a public key, not a key), so does
    the check, naming the variable or the key."""
    env = os.environ.get(config_mod.ENV_KEY)
    if env:
        path, name = env, config_mod.ENV_KEY
    else:
        name = "agent.key"
        if not isinstance(path, str) or not path or "\0" in path or any(p.key == name for p in problems):
            return  # not a path (the agent table's own check said so)
    try:
        load_signing_key(path)
    except SigningError as exc:
        problems.append(Problem(file, name, str(exc)))


def check_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the file at ``path``; an empty list means it loads."""
    p = str(path)
    try:
        doc = config_mod.read_document(path)
    except ConfigError as exc:
        return [Problem(p, None, exc.reason)]
    return check_document(doc, file=p, env=env)
