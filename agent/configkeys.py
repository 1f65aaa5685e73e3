"""Dotted keys of a configuration: which entry of a document a problem's key names, and how it is shown.

A problem names its key as ``agent.drain_timeout``, ``sinks[1].queue_size`` or
``probes.cgroup.watch.psi_paths[2]``. TOML allows any string as a key, the empty
one too, so the dotted text alone cannot always say which entry it means: an
empty key would make ``agent.``. :func:`locate` finds the entry by matching the
text against the document's own keys, and names it with an empty key shown as
``""`` (``agent.""``), as TOML writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Located", "locate", "shown_key"]


def shown_key(name: str) -> str:
    """One key of a table as a problem shows it: the empty key as ``""``."""
    return name or '""'


@dataclass(frozen=True, slots=True)
class Located:
    #: the keys (of tables) and indexes (of arrays) from the table down to the entry
    path: tuple[str | int, ...]
    #: the whole key, with each empty key on the way shown as ``""``
    shown: str


def locate(table: Any, prefix: str, key: str) -> Located | None:
    """The deepest entry of ``table`` (itself named ``prefix``) that ``key`` names or lies within; None when
    ``key`` is not inside ``prefix``. ``key`` may show an empty key either way (``agent.`` or ``agent.""``)."""
    if prefix and not (key == prefix or (key.startswith(prefix) and key[len(prefix)] in ".[")):
        return None
    best: tuple[int, int, tuple[str | int, ...], str] = (len(prefix), 0, (), prefix)
    todo: list[tuple[Any, int, tuple[str | int, ...], str]] = [(table, len(prefix), (), prefix)]
    while todo:
        node, pos, path, shown = todo.pop()
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
                    if (end, len(path) + 1) > best[:2]:
                        best = (end, len(path) + 1, (*path, name), shown + seen)
                    todo.append((below, end, (*path, name), shown + seen))
    end, _depth, path, shown = best
    return Located(path, shown + key[end:]) if path else None


def _spellings(name: str, first: bool) -> tuple[str, ...]:
    dot = "" if first else "."
    return (dot + name,) if name else (dot, dot + '""')
