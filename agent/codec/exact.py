"""JSON parsing that keeps every integer exact.

orjson parses an integer beyond its 64 bits (from 2^64 up, from -2^63 down) as
a rounded float. :func:`loads_exact` parses with orjson and, only when the result
holds a float that may be such a rounded integer, parses the same text again
with the standard library, which keeps integers of any size. Floats written as
floats (``1e20``) come out as the same floats either way. An integer of 309
digits or more is beyond even a double: orjson refuses it as "infinity", and
the standard library parses it instead (a float that large is still refused,
as are NaN, Infinity and lone surrogates, which orjson refuses too).
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

import orjson

from .. import _native

__all__ = ["TooDeep", "duplicate_name", "loads_exact", "loads_wide", "may_be_rounded", "reparse"]

#: orjson parses an integer beyond its 64 bits as a rounded float: from 2^64 up, and from -2^63 down
_ROUNDED_FROM, _ROUNDED_DOWN_FROM = 2.0**64, -(2.0**63)
#: the native walk's depth bound (deeper values are walked here)
_NATIVE_DEPTH = 128


def may_be_rounded(obj: Any) -> bool:
    """Whether ``obj`` (parsed JSON) holds a float that may stand for an integer orjson could not hold exactly."""
    stack = [obj]
    while stack:
        node = stack.pop()
        if type(node) is float:
            if node >= _ROUNDED_FROM or node <= _ROUNDED_DOWN_FROM:
                return True
        elif type(node) is dict:
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return False


def reparse(text: bytes | str, value: Any) -> Any:
    """``value`` (orjson's parse of ``text``), or ``text`` parsed again exactly when ``value`` may hold a
    rounded integer. ``text`` must be JSON orjson took (so no NaN, no lone surrogate)."""
    if not may_be_rounded(value):
        return value
    try:
        return json.loads(text)
    except RecursionError:  # nesting deeper than the standard parser goes: what orjson made
        return value


class _NotFinite(ValueError):
    pass


class TooDeep(json.JSONDecodeError):
    """Nesting deeper than the standard library's parser goes (a JSONDecodeError, as orjson's errors are)."""

    def __init__(self, doc: str) -> None:
        super().__init__("nesting deeper than the parser goes", doc, 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _constant(text: str) -> Any:
    raise _NotFinite(text)  # NaN, Infinity, -Infinity: not JSON


def _has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        node = stack.pop()
        if type(node) is str:
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif type(node) is dict:
            stack.extend(node)
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return False


def loads_wide(text: bytes | str, refused: orjson.JSONDecodeError) -> Any:
    """``text``, which orjson ``refused``, parsed again when the reason was a number beyond a double: the
    value with its integers exact, or ``refused`` raised again when it is not JSON orjson would take but for
    that (a float that is infinite, NaN, a lone surrogate); :class:`TooDeep` for nesting deeper than the
    standard parser goes."""
    if "infinity" not in str(refused):
        raise refused
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except RecursionError:
        raise TooDeep("") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # the interpreter's bound on reading long integers
            raise _too_many_digits(text) from None
        raise refused from None
    if _has_lone_surrogate(value):
        raise refused
    return value


def _too_many_digits(text: bytes | str) -> orjson.JSONDecodeError:
    """The refusal of an integer longer than the interpreter reads (``sys.get_int_max_str_digits``, 4300 by
    default: reading one is quadratic in its length), where it starts."""
    limit = sys.get_int_max_str_digits()
    doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    m = re.search(f"[0-9]{{{limit + 1},}}", doc)
    return orjson.JSONDecodeError(f"an integer of more than {limit} digits (at most {limit} are read)", doc,
                                  m.start() if m else 0)


def loads_exact(text: bytes | str) -> Any:
    """``orjson.loads(text)`` with every integer exact; raises orjson.JSONDecodeError as orjson does."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return loads_wide(text, exc)
    passes = _native.check_passes
    if type(value) is dict and passes is not None and passes(value, _NATIVE_DEPTH):
        return value  # the native walk found no such float (the common case)
    return reparse(text, value)


class _Duplicate(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for name, _value in pairs:
            if name in seen:
                raise _Duplicate(name)
            seen.add(name)
    return out


def duplicate_name(raw: bytes) -> str | None:
    """A member name that appears twice in one object of the JSON text ``raw`` (at any depth), or None.

    A JSON parser keeps one of the two, and parsers differ in which: the signature was checked on the last
    (what this verifier's parser keeps), while a reader that keeps the first would see values nothing signed.
    RFC 8785 takes I-JSON, which has no duplicate names. ``raw`` must be valid JSON (parsed once already)."""
    try:
        json.loads(raw, object_pairs_hook=_unique)
    except _Duplicate as dup:
        return dup.name
    except ValueError:  # what the standard library reads differently from the first parser: not this check's
        return None
    return None
