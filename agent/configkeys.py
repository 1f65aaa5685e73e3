"""Dotted keys of a configuration: which entry of a document a problem's key names, and how it is shown.

A problem names its key as ``agent.drain_timeout``, ``sinks[1].queue_size`` or
``probes.cgroup.watch.psi_paths[2]``. TOML allows any string as a key, the empty
one too, so the dotted text alone cannot always say which entry it means: an
empty key would make ``agent.``, and ``[probes."cgroup.watch"]`` would read as
the ``watch`` table of ``[probes.cgroup]``. :func:`locate` finds the entry by
matching the text against the document's own keys, and names it with each key
that is not a bare key (letters, digits, ``_`` and ``-``) quoted as TOML writes
it: ``agent.""``, ``probes."cgroup.watch"``, ``listeners[0]."x[0]"``. An index
(``[0]``) is the project's own notation for an entry of an array of tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Located", "locate", "shown_key"]


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def shown_key(name: str) -> str:
    """One key of a table as a problem shows it: a bare key as it is, any other (the empty one too) as a TOML
    basic string (``"cgroup.watch"``, ``""``, ``"a\\nb"``)."""
    if _BARE.fullmatch(name):
        return name
    # a basic string's escapes are JSON's, and DEL, which JSON leaves as it is, is escaped too
    return json.dumps(name, ensure_ascii=False).replace("\x7f", "\\u007f")


@dataclass(frozen=True, slots=True)
class Located:
    #: the keys (of tables) and indexes (of arrays) from the table down to the entry
    path: tuple[str | int, ...]
    #: the whole key, with each key on the way that is not a bare key quoted (:func:`shown_key`)
    shown: str


def locate(table: Any, prefix: str, key: str) -> Located | None:
    """The deepest entry of ``table`` (itself named ``prefix``) that ``key`` names or lies within; None when
    ``key`` is not inside ``prefix``. ``key`` may show a key that is not bare either way (``agent.`` or
    ``agent.""``, ``agent.a.b`` or ``agent."a.b"``); where the text fits two entries (a key ``"a.b"`` and a
    table ``a`` holding ``b``), the one reached through more such keys is meant: no key the agent knows needs
    quoting, so that one is the unknown key a problem names."""
    if prefix and not (key == prefix or (key.startswith(prefix) and key[len(prefix)] in ".[")):
        return None
    best: tuple[int, int, int, tuple[str | int, ...], str] = (len(prefix), 0, 0, (), prefix)
    todo: list[tuple[Any, int, int, tuple[str | int, ...], str]] = [(table, len(prefix), 0, (), prefix)]
    while todo:
        node, pos, quoted, path, shown = todo.pop()
        if isinstance(node, Mapping):
            children: list[tuple[str | int, Any, tuple[str, ...], str]] = [
                (k, v, _spellings(str(k), pos == 0), f"{'.' if pos else ''}{shown_key(str(k))}")
                for k, v in node.items()]
        elif isinstance(node, list):
            children = [(i, v, (f"[{i}]",), f"[{i}]") for i, v in enumerate(node)]
        else:
            continue
        for name, below, spellings, seen in children:
            for text in spellings:
                end = pos + len(text)
                if key.startswith(text, pos) and (end == len(key) or key[end] in ".["):
                    q = quoted + (isinstance(name, str) and shown_key(name) != name)
                    if (end, q, len(path) + 1) > best[:3]:
                        best = (end, q, len(path) + 1, (*path, name), shown + seen)
                    todo.append((below, end, q, (*path, name), shown + seen))
    end, _quoted, _depth, path, shown = best
    return Located(path, shown + key[end:]) if path else None


def _spellings(name: str, first: bool) -> tuple[str, ...]:
    """How a key may appear in a problem's dotted text: as it is, and quoted when it is not a bare key."""
    dot = "" if first else "."
    quoted = shown_key(name)
    return (dot + name,) if quoted == name else (dot + name, dot + quoted)
