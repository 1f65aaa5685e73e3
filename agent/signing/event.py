"""The CloudEvents verifiability extension (DSSE), both directions.

The verification material of an event is::

    SHA256( SHA256(id) || SHA256(source) || SHA256(specversion) || SHA256(type)
          || SHA256(datacontenttype) || SHA256(dataschema) || SHA256(subject)
          || SHA256(time as UTC YYYY-MM-DDTHH:MM:SSZ) || SHA256(data bytes)
          || for each name in signedextattrs: SHA256(name) || SHA256(value) )

with SHA256 of the empty string for an absent attribute. The data bytes are the
RFC 8785 (JCS) bytes of JSON data, the decoded bytes of ``data_base64``, or the
UTF-8 of string data of a non-JSON media type. The 32-byte digest is the DSSE
payload (type ``https://cloudevents.io/verifiability/dsse/v0.1``); the base64
of the envelope is the ``dssematerial`` attribute.

Signing is here; verification (:func:`verify_event`, :func:`check_event`,
:class:`EventChecker`) is one implementation in :mod:`agent.signing.checker`,
which computes this material with the helpers below and is re-exported here.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..codec.canonical import canonical
from ..errors import VerifyError
from .dsse import PAYLOAD_TYPE, b64d, encode_envelope, pae
from .keys import SigningKey

__all__ = [
    "CORE_ATTRIBUTES",
    "NOT_EXTENSIONS",
    "PAYLOAD_TYPE",
    "EventChecker",
    "attr_text",
    "check_event",
    "data_bytes",
    "dssematerial",
    "is_json_media",
    "material",
    "normalize_time",
    "sign_event",
    "verify_event",
]

_PT: bytes = PAYLOAD_TYPE.encode()
#: the context attributes hashed in order; ``time`` comes after them
CORE_ATTRIBUTES = ("id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject")
#: attribute names that are never extension attributes (so never named in ``signedextattrs``)
NOT_EXTENSIONS = frozenset((*CORE_ATTRIBUTES, "time", "data", "data_base64", "dssematerial", "signedextattrs"))
_EMPTY = hashlib.sha256(b"").digest()

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,
)


_UTC_SECONDS: dict[str, str] = {}
#: one or more ASCII digits, from ``pos`` to ``endpos``
_FRACTION = re.compile(r"[0-9]+").fullmatch


def normalize_time(value: str) -> str:
    """An RFC 3339 timestamp as UTC ``YYYY-MM-DDTHH:MM:SSZ`` (fraction dropped)."""
    # the common case first: UTC with a "Z", seconds already seen (so checked), and an ASCII fraction or none
    if len(value) >= 20 and value[-1] == "Z":
        hit = _UTC_SECONDS.get(value[:19])
        if hit is not None and (len(value) == 20 or (value[19] == "." and _FRACTION(value, 20, len(value) - 1))):
            return hit
    m = _RFC3339.match(value)
    if not m:
        raise VerifyError(f"time {value!r} is not an RFC 3339 timestamp")
    if m.group(8):
        # already UTC: the answer depends on the seconds alone, which repeat from event to event
        sec = value[:19]
        hit = _UTC_SECONDS.get(sec)
        if hit is None:
            if len(_UTC_SECONDS) > 4096:
                _UTC_SECONDS.clear()
            hit = _UTC_SECONDS[sec] = _normalize(m, value)
        return hit
    return _normalize(m, value)


def _normalize(m: re.Match[str], value: str) -> str:
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    if y == 0:
        raise VerifyError(f"time {value!r} is in year 0000; {_BEYOND}")
    try:
        t = datetime(y, mo, d, h, mi, min(s, 59), tzinfo=UTC)
    except ValueError:
        raise VerifyError(f"time {value!r} is not a valid date and time") from None
    if m.group(9):
        if int(m.group(10)) > 23 or int(m.group(11)) > 59:
            raise VerifyError(f"time {value!r} has an offset outside -23:59..+23:59")
        off = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        try:
            t = t - off if m.group(9) == "+" else t + off
        except OverflowError:
            raise VerifyError(f"time {value!r} falls outside years 0001 to 9999 in UTC; {_BEYOND}") from None
    # not strftime: its %Y writes a year before 1000 with fewer than four digits here (glibc)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"


#: why a time of year 0000, or one that is there or in year 10000 in UTC, cannot be signed
_BEYOND = "the signature covers its UTC form, which has years 0001 to 9999 only"


def attr_text(value: Any) -> str:
    """An attribute's canonical string form per the CloudEvents type system."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise VerifyError(f"attribute value of type {type(value).__name__} is not a CloudEvents attribute type")


def is_json_media(ct: Any) -> bool:
    """Whether a ``datacontenttype`` makes string data JSON (hashed as its JCS) rather than text (its bytes)."""
    if ct is None:
        return True
    if not isinstance(ct, str):
        return False
    media = ct.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def data_bytes(event: Mapping[str, Any]) -> bytes:
    """The bytes whose digest stands for the event's data."""
    if "data_base64" in event:
        if "data" in event:  # only one of them could be hashed: the other would ride along unsigned
            raise VerifyError("data and data_base64 are exclusive")
        return b64d(event["data_base64"], "data_base64")
    if "data" not in event:
        return b""
    data = event["data"]
    if isinstance(data, str) and not is_json_media(event.get("datacontenttype")):
        return data.encode("utf-8")
    try:
        return canonical(data)
    except ValueError as exc:
        raise VerifyError(f"data: {exc}") from None


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _h_text(text: str) -> bytes:
    return _h(text.encode())


def material(
    event: Mapping[str, Any],
    ext_names: Sequence[str],
    data: bytes | None = None,
    *,
    hash_text: Callable[[str], bytes] = _h_text,
) -> bytes:
    """The 32-byte verification material of ``event`` signing ``ext_names``.

    ``data`` is the data's bytes when the caller already has them; ``hash_text``
    lets a caller that sees the same strings again and again cache their digests.
    """
    parts = []
    for name in CORE_ATTRIBUTES:
        v = event.get(name)
        parts.append(_EMPTY if v is None else hash_text(attr_text(v)))
    t = event.get("time")
    parts.append(_EMPTY if t is None else hash_text(normalize_time(attr_text(t))))
    parts.append(_h(data_bytes(event) if data is None else data))
    for name in ext_names:
        if event.get(name) is None:  # JSON format: null is absent
            raise VerifyError(f"signed extension attribute {name!r} is {'null' if name in event else 'missing'}")
        parts.append(hash_text(name))
        parts.append(hash_text(attr_text(event[name])))
    return _h(b"".join(parts))


def dssematerial(digest: bytes, key: SigningKey) -> str:
    """Sign a verification material; return the base64 envelope."""
    env = encode_envelope(PAYLOAD_TYPE, digest, key.keyid, key.sign(pae(_PT, digest)))
    return base64.b64encode(env).decode("ascii")


def _check_ext_names(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if not n:
            raise VerifyError("signedextattrs has an empty name")
        if n in NOT_EXTENSIONS:
            raise VerifyError(f"signedextattrs must not name {n!r}")
        if n in seen:
            raise VerifyError(f"signedextattrs repeats {n!r}")
        if n != n.strip() or not n.isalnum() or not n.islower():
            raise VerifyError(f"signedextattrs has an invalid attribute name {n!r}")
        seen.add(n)


def sign_event(event: dict[str, Any], key: SigningKey, ext_names: Sequence[str] = ()) -> dict[str, Any]:
    """Set ``signedextattrs`` (if any) and ``dssematerial`` on ``event`` in place and return it."""
    names = list(ext_names)
    _check_ext_names(names)
    event.pop("dssematerial", None)
    if names:
        event["signedextattrs"] = ",".join(names)
    else:
        event.pop("signedextattrs", None)
    event["dssematerial"] = dssematerial(material(event, names), key)
    return event


def signed_ext_names(event: Mapping[str, Any]) -> list[str]:
    raw = event.get("signedextattrs")
    if raw is None or raw == "":
        return []
    if not isinstance(raw, str):
        raise VerifyError("signedextattrs is not a string")
    names = raw.split(",")
    _check_ext_names(names)
    return names



# Verification lives in .checker, which imports the helpers above; re-exported here, where callers import it.
from .checker import EventChecker, check_event, verify_event  # noqa: E402
