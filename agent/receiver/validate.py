"""Checks on one guest frame, pure and cheap: JSON, depth, CloudEvents attributes.

:func:`parse_event` turns a frame into an event dict or raises
:class:`Rejected` with a short, stable ``reason`` (a metric label) and a
``detail`` for the log. Nothing here trusts the host-stamp attributes a guest
may have sent: the pipeline overwrites them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .. import _native
from ..codec.exact import TooDeep, loads_wide, reparse
from ..configtables import MAX_ATTRIBUTES
from ..errors import TransportError
from ..model import NOT_IN_STRINGS, cut, not_utf8
from ..signing.dsse import strict_base64

__all__ = ["REASONS", "REQUIRED", "Rejected", "check_attributes", "check_count", "json_depth",
           "parse_event"]

#: every reason a frame or connection can be refused for (metric labels)
REASONS = ("frame", "json", "depth", "attributes", "unsigned", "signature", "pipeline", "connections",
           "peer_connections", "idle", "dropped")
REQUIRED = ("specversion", "id", "source", "type")
_OPTIONAL_STR = ("datacontenttype", "dataschema", "subject")
_EXT_NAME = re.compile(r"[a-z0-9]{1,64}\Z")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII)
#: the host's own attributes: what a guest sent in them is overwritten, so whatever their type they are no reason
#: to refuse an event, unless the guest signed it (its ``dssematerial`` is not empty): its values are then kept,
#: as ``guest<name>`` extension attributes, and checked as any extension is
_HOSTS = frozenset(("hostid", "hostreceivedat", "sequence", "hostpeer"))
#: checked before the loop (or not at all): the names the host drops or writes itself
_SKIP = frozenset((*REQUIRED, "data", "guestdssematerial", "guestsignedextattrs",
                   *("guest" + n for n in _HOSTS)))
_INT_MAX = (1 << 53) - 1


class Rejected(TransportError):
    """A frame the receiver refuses; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def json_depth(obj: Any) -> int:
    """Nesting depth of containers (a scalar is 0, ``{}`` is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        d += 1
        if d > deepest:
            deepest = d
        stack.extend((child, d) for child in node if isinstance(child, (dict, list)))
    return deepest


def _bad(detail: str) -> Rejected:
    return Rejected("attributes", detail)


def _text(name: str, value: str) -> None:
    """Refuse a string attribute holding a character CloudEvents strings exclude (printed by a verifier or a log,
    a newline or an escape sequence would forge lines)."""
    if (m := NOT_IN_STRINGS.search(value)) is not None:
        raise _bad(f"{name} holds U+{ord(m.group()):04X}, a character CloudEvents strings exclude (control "
                   "characters and noncharacters)")


_STR, _TIME, _B64, _EXT, _MAT, _HOST = range(6)
#: the verifiability extension's attributes: strings (moved to ``guest*`` by the host, checked or not)
_MATERIAL = ("dssematerial", "signedextattrs")
#: per attribute-name tuple, what to check of each value; names repeat, so the names are checked once
_PLANS: dict[tuple[str, ...], tuple[tuple[str, int], ...]] = {}
_MAX_PLANS = 1024


def _plan(shape: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    plan = []
    for name in shape:
        if name in _SKIP or (name in _HOSTS and "dssematerial" not in shape):
            continue
        if name in _HOSTS:
            plan.append((name, _HOST))
            continue
        if name in _OPTIONAL_STR:
            plan.append((name, _STR))
        elif name == "time":
            plan.append((name, _TIME))
        elif name == "data_base64":
            plan.append((name, _B64))
        elif name in _MATERIAL:
            plan.append((name, _MAT))
        else:
            if not _EXT_NAME.match(name):
                if len(name) > 64 and name.isascii() and name.isalnum() and name.islower():
                    raise _bad(f"attribute name {name[:40]!r}... is {len(name)} characters long (at most 64)")
                raise _bad(f"attribute name {name[:40]!r} is not lower-case letters and digits")
            plan.append((name, _EXT))
    out = tuple(plan)
    if len(shape) <= 64 and sum(map(len, shape)) <= 2048:  # a hostile frame's 80,000 names are not kept
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[shape] = out
    return out


#: the native check of the passing case (most events): when it cannot say yes, the checks below decide
_passes = _native.check_passes


def check_attributes(event: dict[str, Any]) -> None:
    """Required attributes present and typed; optional and extension attributes typed."""
    if _passes is None or not _passes(event):
        _check_attributes(event)


def _check_attributes(event: dict[str, Any]) -> None:
    """:func:`check_attributes` in Python: what the native check cannot pass, with the reason when it fails."""
    if (spec := event.get("specversion")) != "1.0":
        if spec is None:
            raise _bad("specversion is missing (it must be \"1.0\")")
        raise _bad(f"specversion must be \"1.0\", got {cut(repr(spec), 41)}")
    for name in ("id", "source", "type"):
        v = event.get(name)
        if not isinstance(v, str) or not v:
            raise _bad(f"{name} must be a non-empty string")
        _text(name, v)
    shape = tuple(event)
    plan = _PLANS.get(shape)
    if plan is None:
        plan = _plan(shape)
    for name, kind in plan:
        v = event[name]
        if v is None:
            continue
        if kind == _HOST:  # kept, and so checked, when the guest signed the event
            if not event.get("dssematerial"):
                continue
            kind = _EXT
        if kind == _EXT:
            if isinstance(v, str):
                _text(name, v)
                continue
            if isinstance(v, bool) or (isinstance(v, int) and -_INT_MAX <= v <= _INT_MAX):
                continue
            # orjson reads an integer from 2^64 up as a float: beyond ±(2^53-1) it is the integer's problem
            if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) > _INT_MAX):
                raise _bad(f"extension attribute {name} is an integer beyond ±(2^53-1), which JSON cannot carry "
                           "exactly: send it as a string")
            if isinstance(v, float):  # 1.5, and 2.0 or 2e0 alike: an integer attribute is written without either
                raise _bad(f"extension attribute {name} is a number written with a fraction or an exponent: an "
                           "attribute is a string, boolean or integer (send it as a string)")
            raise _bad(f"extension attribute {name} must be a string, boolean or integer")
        if kind == _MAT:
            if not isinstance(v, str):
                raise _bad(f"{name} must be a string (the verifiability extension's)")
            _text(name, v)
            continue
        if kind == _STR:
            if not isinstance(v, str) or not v:
                raise _bad(f"{name} must be a non-empty string")
            _text(name, v)
        elif kind == _TIME:
            if not (isinstance(v, str) and _RFC3339.match(v)):
                raise _bad("time must be an RFC 3339 timestamp")
            if v[10] == " ":  # RFC 3339 lets readers take it; its grammar, and strict SDKs, do not: never passed on
                raise _bad("time must be an RFC 3339 timestamp (a T between date and time, not a space)")
        else:
            if "data" in event:
                raise _bad("data and data_base64 are exclusive")
            if not isinstance(v, str):
                raise _bad("data_base64 must be a string")
            if not strict_base64(v):
                raise _bad("data_base64 is not base64 (RFC 4648: the standard alphabet, padded, the padding bits "
                           "zero)")


def check_count(event: dict[str, Any], max_attributes: int) -> None:
    """Refuse an event with more than ``max_attributes`` attributes (``data`` and the rest alike)."""
    if len(event) > max_attributes:
        raise _bad(f"{len(event)} attributes, more than max_attributes ({max_attributes})")


def parse_event(frame: bytes, *, max_depth: int, max_attributes: int = MAX_ATTRIBUTES) -> dict[str, Any]:
    """One frame -> a checked event dict; :class:`Rejected` otherwise.

    An integer too large for orjson's 64 bits is kept exact: such a frame is parsed again by the standard
    library (the pipeline then carries the integer as its decimal string).
    """
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        detail = str(exc)
        if "depth limit" in detail or "recursion" in detail:  # deeper than orjson itself goes (1024)
            raise Rejected("depth", f"JSON nesting deeper than orjson parses, and than {max_depth}") from None
        try:
            event = loads_wide(frame, exc)  # an integer beyond a double: kept exact
        except TooDeep:
            raise Rejected("depth", f"JSON nesting deeper than the parser goes, and than {max_depth}") from None
        except orjson.JSONDecodeError as again:  # orjson's refusal, or why the integers could not be read
            raise Rejected("json", not_utf8(frame) or str(again)[:120]) from None
    if not isinstance(event, dict):
        raise Rejected("json", "frame is not a JSON object")
    check_count(event, max_attributes)
    if _passes is not None and _passes(event, max_depth):  # the common case, natively: depth, attributes, floats
        return event
    # the number of opening brackets bounds the depth: walk only when it could be too deep
    if frame.count(b"{") + frame.count(b"[") > max_depth:
        depth = json_depth(event)
        if depth > max_depth:
            raise Rejected("depth", f"JSON nesting depth {depth} exceeds {max_depth}")
    _check_attributes(event)  # the native check said no already (or is not built)
    if "data" in event:
        # orjson already took the frame (no NaN, no lone surrogate) and its depth is within bounds
        exact = reparse(frame, event)
        if isinstance(exact, dict):
            return exact
    return event
