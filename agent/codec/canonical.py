"""RFC 8785 (JCS) canonical JSON, fast.

``canonical(obj)`` returns exactly the bytes the ``rfc8785`` package returns, but
takes the orjson path (≈ 60× faster) whenever orjson's output is provably the
same: sorted keys that are ASCII (JCS sorts by UTF-16 code units, orjson by
UTF-8 bytes; they agree on ASCII), and floats that orjson prints in plain
decimal notation the way ECMAScript does (non-integral, 1e-5 ≤ |x| < 1e16). An
integral float is written as the integer it equals, which is what JCS prints
for it too. Anything else falls back to ``rfc8785``.

Whether orjson's output needs no change is read off its bytes (:func:`_as_is`):
orjson writes a float either in plain decimal (``0.12``, ``123.0``) or with a
signed exponent (``1e-7``, ``1.5e+16``; before 3.11.7 without the ``+``, which
is checked at import), so output with no exponent, no ``.0`` closing a number
and no ``null`` (what NaN becomes) holds only floats both agree on. A string
that happens to contain one of these only costs the slower path, never a
wrong answer.

``prepare(obj)`` applies the event-data rules of the contract before that:
integers beyond ±(2^53−1) become decimal strings, integral floats become
integers, or decimal strings from 2^53 up to 10^21 (the digits JCS writes
for such a float, which every reader takes for an integer beyond 2^53), and
non-finite floats (which JSON cannot carry) become ``null``. From 10^21 on JCS
writes a float with an exponent (``1e+21``), which reads back as the same
float: such a float stays one.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
import rfc8785

__all__ = ["MAX_SAFE_INT", "canonical", "prepare"]

MAX_SAFE_INT = 2**53 - 1
#: from this magnitude on, JCS (as ECMAScript) writes a number with an exponent
_EXPONENT_FROM = 1e21
_SORT = orjson.OPT_SORT_KEYS
_STRICT = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


#: orjson from 3.11.7 writes every exponent with its sign (``1e+16``); older ones write ``1e16``, so for those
#: any digit followed by an ``e`` counts as an exponent (more strings take the slow path, never a wrong answer)
_SIGNED_EXPONENTS = orjson.dumps([1e16, 1e-7]) == b"[1e+16,1e-7]"
#: what in orjson's output may differ from JCS: an exponent, an integral float (``.0`` closing a number), or
#: ``null`` (which is also what NaN and the infinities become)
_UNSAFE = re.compile(rb"e[-+]|\.0[,\]}]|null" if _SIGNED_EXPONENTS else rb"[0-9][eE]|\.0[,\]}]|null")


def _as_is(out: bytes) -> bool:
    """orjson's sorted output of an object or array is already JCS (see the module text)."""
    if out[0] not in b"{[" or not out.isascii():
        return False
    if _SIGNED_EXPONENTS and out.find(b"e-") < 0 and out.find(b"e+") < 0 and out.find(b".0") < 0 and \
            out.find(b"null") < 0:
        return True  # the common case, found faster than the expression does it
    return _UNSAFE.search(out) is None


class _Slow(Exception):
    """Raised inside the walk when only rfc8785 can render the value."""


def _walk(obj: Any, big_to_str: bool) -> Any:
    """Return obj with integral floats as ints (and big ints as strings if asked).

    Raises _Slow when orjson's rendering could differ from JCS.
    """
    t = type(obj)
    if t is str or t is bool or obj is None:
        return obj
    if t is int:
        if -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
            return obj
        if big_to_str:
            return str(obj)
        raise _Slow
    if t is float:
        if obj.is_integer():
            if -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
                return int(obj)
            raise _Slow
        if not math.isfinite(obj):
            raise _Slow
        a = -obj if obj < 0 else obj
        if 1e-5 <= a < 1e16:
            return obj
        raise _Slow
    if t is dict:
        out = {}
        for k, v in obj.items():
            if type(k) is not str or not k.isascii():
                raise _Slow
            out[k] = _walk(v, big_to_str)
        return out
    if t is list or t is tuple:
        return [_walk(v, big_to_str) for v in obj]
    raise _Slow


def _slow_prepare(obj: Any) -> Any:
    """The contract's rules without the fast-path bookkeeping."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        v = int(obj)
        return v if -MAX_SAFE_INT <= v <= MAX_SAFE_INT else str(v)
    if isinstance(obj, float):
        f = float(obj)
        if not math.isfinite(f):
            return None
        if f.is_integer():
            if -MAX_SAFE_INT <= f <= MAX_SAFE_INT:
                return int(f)
            # below 10^21 JCS writes it as plain digits, a big integer to every reader: carry those digits (the
            # float's shortest form, padded with zeros: 1.2345678901234568e20 is "123456789012345680000")
            return rfc8785.dumps(f).decode("ascii") if -_EXPONENT_FROM < f < _EXPONENT_FROM else f
        return f
    if isinstance(obj, dict):
        return {str(k): _slow_prepare(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_slow_prepare(v) for v in obj]
    raise ValueError(f"{type(obj).__name__} is not a JSON value")


def prepare(obj: Any) -> tuple[Any, bytes]:
    """Event data per the contract, and its JCS bytes (the bytes that are hashed and emitted).

    Common case first: one orjson call; if the output is ASCII, holds no float
    token and no integer beyond 2^53 (OPT_STRICT_INTEGER), it is already JCS.
    """
    try:
        out = orjson.dumps(obj, option=_STRICT)
        if _as_is(out):
            return obj, out
    except orjson.JSONEncodeError:
        pass
    try:
        ready = _walk(obj, True)
        return ready, orjson.dumps(ready, option=_SORT)
    except (_Slow, orjson.JSONEncodeError):
        ready = _slow_prepare(obj)
        return ready, _rfc8785(ready)


def canonical(obj: Any) -> bytes:
    """JCS bytes of an already-JSON value (as parsed); raises ValueError if it has none."""
    try:
        out = orjson.dumps(obj, option=_STRICT)
        if _as_is(out):
            return out
    except orjson.JSONEncodeError:
        pass
    try:
        return orjson.dumps(_walk(obj, False), option=_SORT)
    except (_Slow, orjson.JSONEncodeError):
        return _rfc8785(obj)


def _rfc8785(obj: Any) -> bytes:
    try:
        out: bytes = rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not representable as canonical JSON: {exc}") from None
    return out
