"""RFC 8785 (JCS) canonical JSON, fast.

``canonical(obj)`` returns exactly the bytes the ``rfc8785`` package returns, but
with orjson doing the writing (≈ 60× faster). Where orjson's output is provably
already JCS it is taken as it is: sorted keys that are ASCII (JCS sorts by UTF-16
code units, orjson by UTF-8 bytes; they agree on ASCII), and floats that orjson
prints the way ECMAScript does. Whether that holds is read off its bytes
(:func:`_as_is`): orjson writes a float either in plain decimal (``0.12``,
``123.0``) or with a signed exponent (``1e-7``, ``1.5e+16``; before 3.11.7
without the ``+``, which is checked at import), so output with no exponent, no
``.0`` closing a number and no ``null`` (what NaN becomes) holds only floats both
agree on. A string that happens to contain one of these only costs the walk.

Otherwise one walk (:func:`_walk`) hands orjson what it then writes as JCS: an
integral float as the integer it equals; a float orjson writes with an exponent
where ECMAScript writes plain digits (from 1e-6 to 1e-5, and integral ones from
2^53 to 10^21) as a JSON fragment of ECMAScript's text (:func:`es_number`); an
object with keys that are not ASCII as a fragment of its own JCS. orjson and
ECMAScript agree on every other finite float (below 1e-6 and from 1e21 on both
write the shortest digits with a signed exponent), which tests hold them to. So
a frame of a megabyte of floats costs a fraction of a second at most, never the
pure-Python encoder's seconds. Only what JSON cannot carry (NaN, the
infinities, other types) reaches ``rfc8785``, which refuses it.

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

__all__ = ["MAX_SAFE_INT", "canonical", "es_number", "prepare"]

MAX_SAFE_INT = 2**53 - 1
#: from this magnitude on, JCS (as ECMAScript) writes a number with an exponent
_EXPONENT_FROM = 1e21
_SORT = orjson.OPT_SORT_KEYS
_Fragment = orjson.Fragment
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


#: a float's shortest round-trip digits as ``repr`` writes them: digits, an optional fraction, an optional exponent
_REPR = re.compile(r"(\d+)(?:\.(\d+))?(?:e([-+]\d+))?")


def es_number(x: float) -> str:
    """What ECMAScript's ``Number::toString`` (and so JCS) writes for a finite float.

    ``repr`` gives the shortest digits that read back as ``x`` (what both specify); only the layout differs:
    plain digits up to 10^21, a plain fraction down to 10^-6, an exponent with its sign beyond.
    """
    if x == 0:
        return "0"
    m = _REPR.fullmatch(repr(-x if x < 0 else x))
    if m is None:  # inf, nan: no JSON number
        raise ValueError(f"{x!r} is not a finite number")
    whole, frac, exp = m.group(1), m.group(2) or "", int(m.group(3) or 0)
    digits = (whole + frac).lstrip("0")
    # x = 0.DIGITS x 10^n, before trailing zeros are dropped from DIGITS
    n = len(whole) + exp - (len(whole + frac) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        out = f"0.{'0' * -n}{digits}"
    else:
        e = n - 1
        out = f"{digits[0]}{'.' + digits[1:] if k > 1 else ''}e{'+' if e >= 0 else '-'}{abs(e)}"
    return "-" + out if x < 0 else out


def _es_small(a: float) -> str:
    """:func:`es_number` of a positive float in [1e-6, 1e-5): ``repr`` writes it as ``D.DDDe-06``."""
    return "0.00000" + repr(a)[:-4].replace(".", "")


def _es_integral(a: float) -> str:
    """:func:`es_number` of a positive integral float below 1e21: its shortest digits, then zeros."""
    if a < 1e16:
        return str(int(a))  # an integer of at most 16 digits: the shortest digits are all of them
    mantissa, _, exp = repr(a).partition("e+")
    digits = mantissa.replace(".", "")
    return digits + "0" * (int(exp) + 1 - len(digits))


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _walk(obj: Any, big_to_str: bool, marks: list[bool] | None = None) -> Any:
    """Return obj ready for orjson with sorted keys to write it as JCS: integral floats as ints (and, if asked,
    big ints as strings and integral floats beyond 2^53 as the digits JCS writes for them), floats that orjson
    writes otherwise than ECMAScript as JSON fragments of ECMAScript's text, and objects with keys that are not
    ASCII (which JCS sorts by UTF-16 code units, orjson by UTF-8 bytes) as fragments of their own JCS.

    With ``marks``, no fragment is made: the value is left as it is and a mark appended instead (the result is
    then plain JSON data, and a second walk without ``marks`` renders it). Raises _Slow for what only the
    reference encoder decides (non-finite floats, big ints kept, other types).
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
        a = -obj if obj < 0 else obj
        if obj.is_integer():
            if a <= MAX_SAFE_INT:
                return int(obj)
            if a >= _EXPONENT_FROM:  # orjson writes these as ECMAScript does (1e+21)
                return obj
            # JCS writes plain digits: with ``big_to_str`` the contract carries them as a string
            text = _es_integral(a) if obj > 0 else "-" + _es_integral(a)
            if big_to_str:
                return text
            if marks is not None:
                marks.append(True)
                return obj
            return _Fragment(text.encode())
        if 1e-5 <= a < 1e16 or a < 1e-6:  # orjson and ECMAScript agree here (tests hold them to it)
            return obj
        if 1e-6 <= a < 1e-5:  # ECMAScript writes 0.000001...
            if marks is not None:
                marks.append(True)
                return obj
            return _Fragment((_es_small(a) if obj > 0 else "-" + _es_small(a)).encode())
        raise _Slow  # not finite (what is left between 1e16 and 1e21 is integral)
    if t is dict:
        out = {}
        plain = True
        for k, v in obj.items():
            if type(k) is not str:
                raise _Slow
            if plain and not k.isascii():
                plain = False
            out[k] = _walk(v, big_to_str, marks)
        if plain:
            return out
        if marks is not None:
            marks.append(True)
            return out
        try:
            members = [orjson.dumps(k) + b":" + orjson.dumps(v, option=_SORT)
                       for k, v in sorted(out.items(), key=lambda kv: _utf16(kv[0]))]
        except orjson.JSONEncodeError:  # a key that is not valid Unicode
            raise _Slow from None
        return _Fragment(b"{" + b",".join(members) + b"}")
    if t is list or t is tuple:
        return [_walk(v, big_to_str, marks) for v in obj]
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
            return es_number(f) if -_EXPONENT_FROM < f < _EXPONENT_FROM else f
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
        marks: list[bool] = []
        ready = _walk(obj, True, marks)
        return ready, orjson.dumps(_walk(ready, False) if marks else ready, option=_SORT)
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
