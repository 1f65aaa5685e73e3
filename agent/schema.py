"""Frozen dataclasses from TOML tables, strictly.

:func:`build` turns one table into one dataclass: unknown keys are errors,
values are checked against the field annotations, and every error is a
:class:`~agent.errors.ConfigError` naming the dotted key. Supported field types:
``bool``, ``int``, ``float`` (an int is accepted), ``str``, ``Literal[...]``,
``tuple[T, ...]`` (from a TOML array), ``dict[str, T]``, ``T | None`` and nested
dataclasses (from a sub-table). No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from .errors import ConfigError

__all__ = ["build", "field_names"]

T = TypeVar("T")


def field_names(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build(cls: type[T], table: Mapping[str, Any], *, prefix: str, file: str | None, also: Iterable[str] = ()) -> T:
    """Build ``cls`` from ``table``; ``prefix`` is the dotted path of the table.

    ``also``: keys the same table takes for another dataclass (the common keys of a probe or sink), named
    with these when a key is unknown.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table, got {kind_of(table)}", key=prefix or None, file=file)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            allowed = ", ".join(sorted({*fields, *also})) or "none"
            raise ConfigError(f"unknown key (allowed here: {allowed})", key=dotted, file=file)
        kwargs[key] = _convert(hints[key], value, dotted, file)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            dotted = f"{prefix}.{name}" if prefix else name
            raise ConfigError("required key is missing", key=dotted, file=file)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ checks
        # a check that names first a field the table set ("queue_size must be at least 1") is that key's problem
        # ("listen: expected HOST:PORT" names it with a colon, and the rest is the reason)
        msg = str(exc)
        first, _, rest = msg.partition(" ")
        if first.endswith(":") and first[:-1] in kwargs and rest:
            first, msg = first[:-1], rest
        if first not in kwargs:  # else the first key the check names that the table set ("... backoff_initial")
            first = next((w for w in _WORD.findall(msg) if w in kwargs), first)
        named = (f"{prefix}.{first}" if prefix else first) if first in kwargs else prefix or None
        raise ConfigError(msg, key=named, file=file) from None


_WORD = re.compile(r"[a-z_][a-z0-9_]*")


def kind_of(v: Any) -> str:
    """What a TOML value is, with the value itself when it is a short scalar (``a number (10.0)``)."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(v), type(v).__name__)
    return f"{kind} ({toml_text(v)})" if type(v) in (bool, int, float) else kind


def toml_text(v: Any) -> str:
    """A value as TOML spells it (``true``, ``nan``, ``"a\\tb"``, a date-time), not as Python does; an array or
    a table by its kind."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):  # a basic string: its escapes are JSON's
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    return kind_of(v)


def _convert(tp: Any, value: Any, key: str, file: str | None) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, file)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(map(repr, choices))}, got {toml_text(value)}", key=key,
                              file=file)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"expected an array, got {kind_of(value)}", key=key, file=file)
        (item_t, *_rest) = get_args(tp)
        return tuple(_convert(item_t, v, f"{key}[{i}]", file) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table, got {kind_of(value)}", key=key, file=file)
        _k, val_t = get_args(tp)
        return {str(k): _convert(val_t, v, f"{key}.{k}", file) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, prefix=key, file=file)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {kind_of(value)}", key=key, file=file)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {kind_of(value)}", key=key, file=file)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {kind_of(value)}", key=key, file=file)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {kind_of(value)}", key=key, file=file)
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {key}")
