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

Verification is one implementation (``EventChecker._names``) behind three
doors: :func:`verify_event` returns what the signature covers,
:func:`check_event` only says yes (returns) or no (raises), and
:class:`EventChecker` makes the same checks for a receiver that sees event
after event under one trust store. The digests of attribute values that repeat
from event to event (source, type, subject, extension names, the normalized
time) and the validated ``signedextattrs`` strings are kept in small bounded
dicts; unique values (id, data, extension values) are hashed directly. A kept
digest is a pure function of its key, so a cache can make a check cheaper but
never change its answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from binascii import a2b_base64
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..codec.canonical import canonical
from ..errors import VerifyError
from .dsse import PAYLOAD_TYPE, b64d, encode_envelope, envelope_parts, pae
from .keys import SigningKey, VerifyKey

__all__ = [
    "CORE_ATTRIBUTES",
    "NOT_EXTENSIONS",
    "PAYLOAD_TYPE",
    "EventChecker",
    "attr_text",
    "check_event",
    "data_bytes",
    "dssematerial",
    "material",
    "normalize_time",
    "sign_event",
    "verify_event",
]

_PT = PAYLOAD_TYPE.encode()
#: the pre-authentication encoding of a 32-byte payload, up to the payload
_PAE32_HEAD = pae(_PT, bytes(32))[:-32]
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
    try:
        t = datetime(y, mo, d, h, mi, min(s, 59), tzinfo=UTC)
    except ValueError:
        raise VerifyError(f"time {value!r} is not a valid date and time") from None
    if m.group(9):
        off = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        t = t - off if m.group(9) == "+" else t + off
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def attr_text(value: Any) -> str:
    """An attribute's canonical string form per the CloudEvents type system."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise VerifyError(f"attribute value of type {type(value).__name__} is not a CloudEvents attribute type")


def _is_json_media(ct: Any) -> bool:
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
    if isinstance(data, str) and not _is_json_media(event.get("datacontenttype")):
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
        if name not in event:
            raise VerifyError(f"signed extension attribute {name!r} is missing")
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


#: a trusted key's signature check: returns for a good signature, raises InvalidSignature (or ValueError) otherwise
_SignatureCheck = Callable[[bytes, bytes], object]


def _signature_check(key: VerifyKey) -> _SignatureCheck:
    """The cheapest call that checks a signature by ``key``: the Ed25519 key's own ``verify`` when it is one."""
    public = getattr(key, "public", None)
    if type(key) is VerifyKey and isinstance(public, Ed25519PublicKey):
        return public.verify

    def check(sig: bytes, msg: bytes) -> None:
        if not key.verify(sig, msg):
            raise InvalidSignature

    return check


def _trusted_in(keys: Mapping[str, VerifyKey]) -> Callable[[str], _SignatureCheck | None]:
    def trusted(keyid: str) -> _SignatureCheck | None:
        key = keys.get(keyid)
        return None if key is None else _signature_check(key)

    return trusted


_sha256 = hashlib.sha256


def _h_value(value: Any) -> bytes:
    """Digest of an attribute value's text."""
    return _sha256((value if type(value) is str else attr_text(value)).encode()).digest()


def _covered(event: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    keep = {*CORE_ATTRIBUTES, "time", "data", "data_base64", *names}
    return {k: v for k, v in event.items() if k in keep}


class EventChecker:
    """The checks of :func:`verify_event` against one trust store, for event after event.

    Kept in dicts, each emptied when it reaches its bound: digests of single
    values (:attr:`MAX_TEXTS`), the joined digests of the context attributes
    after ``id`` (:attr:`MAX_CONTEXTS`; a sender's source, specversion, type,
    datacontenttype, dataschema and subject come in few combinations) and
    validated ``signedextattrs`` strings (:attr:`MAX_EXT`). No string longer
    than :attr:`MAX_TEXT_LEN` characters is kept, so a sender inventing values
    costs memory only up to those bounds. Only strings (and None) are keys: ``1``
    and ``True`` are equal dict keys but different attribute texts. The trust
    store is read once, when the checker is made.
    """

    MAX_TEXTS = 4096
    MAX_TEXT_LEN = 512
    MAX_EXT = 256
    MAX_CONTEXTS = 1024

    __slots__ = ("_contexts", "_ext", "_texts", "_trusted")

    def __init__(self, keys: Mapping[str, VerifyKey]) -> None:
        self._trusted = {keyid: _signature_check(key) for keyid, key in keys.items()}
        self._texts: dict[str, bytes] = {}
        self._ext: dict[str, tuple[str, ...]] = {}
        self._contexts: dict[tuple[Any, ...], bytes] = {}

    def check(self, event: Mapping[str, Any]) -> None:
        """Return if ``event`` verifies; raise :class:`VerifyError` with the reason otherwise."""
        self._names(event, self._trusted.get)

    def verify(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """As :func:`verify_event`: what the signature covers."""
        return _covered(event, self._names(event, self._trusted.get))

    def cache_sizes(self) -> tuple[int, int, int]:
        """Entries held now: (value digests, context digests, ``signedextattrs`` strings)."""
        return len(self._texts), len(self._contexts), len(self._ext)

    def _names(self, event: Mapping[str, Any], trusted: Callable[[str], _SignatureCheck | None]) -> Sequence[str]:
        """Every check of the verifiability extension; the signed extension names, or VerifyError.

        ``trusted(keyid)`` is the signature check of a trusted key, None for any other key.
        """
        raw = event.get("dssematerial")
        if not raw:
            raise VerifyError("event is not signed (no dssematerial)")
        try:  # b64d's common case, inline
            env = a2b_base64(raw, strict_mode=True) if type(raw) is str else b64d(raw, "dssematerial")
        except (binascii.Error, ValueError):
            env = b64d(raw, "dssematerial")
        ptype, payload, sigs = envelope_parts(env)
        if ptype != PAYLOAD_TYPE:
            raise VerifyError(f"unknown verification payload type {ptype!r}")
        msg = _PAE32_HEAD + payload if len(payload) == 32 else pae(_PT, payload)
        known = False
        for keyid, sig in sigs:
            check = trusted(keyid)
            if check is None:
                continue
            known = True
            try:
                check(sig, msg)
            except (InvalidSignature, ValueError):
                continue
            break
        else:
            if known:
                raise VerifyError("signature does not verify")
            ids = ", ".join(keyid[:16] for keyid, _ in sigs) or "none"
            raise VerifyError(f"no signature by a trusted key (signed by: {ids})")
        if len(payload) != 32:
            raise VerifyError("verification material is not a 32-byte digest")

        get = event.get
        ext = get("signedextattrs")
        names: Sequence[str] = ()
        if ext is not None and ext != "":
            cached = self._ext.get(ext) if type(ext) is str else None
            names = cached if cached is not None else self._ext_names(event)

        # the material, as material() computes it
        v = get("id")  # unique per event: hashed, not kept
        parts = [_EMPTY if v is None else _sha256(v.encode()).digest() if type(v) is str else _h_value(v)]
        append = parts.append
        # CORE_ATTRIBUTES after id, spelled out
        context = (get("source"), get("specversion"), get("type"), get("datacontenttype"), get("dataschema"),
                   get("subject"))
        try:
            d = self._contexts.get(context)
        except TypeError:  # an unhashable value, which _context_digests refuses
            d = None
        append(self._context_digests(context) if d is None else d)
        v = get("time")
        if v is None:
            append(_EMPTY)
        else:
            t = normalize_time(v if type(v) is str else attr_text(v))
            d = self._texts.get(t)
            append(self._digest(t) if d is None else d)
        v = get("data")
        if type(v) is dict and "data_base64" not in event:  # JSON data whatever the media type
            try:
                append(_sha256(canonical(v)).digest())
            except ValueError as exc:
                raise VerifyError(f"data: {exc}") from None
        else:
            append(_sha256(data_bytes(event)).digest())
        for name in names:
            if name not in event:
                raise VerifyError(f"signed extension attribute {name!r} is missing")
            d = self._texts.get(name)
            append(self._digest(name) if d is None else d)
            append(_h_value(event[name]))
        if not hmac.compare_digest(_sha256(b"".join(parts)).digest(), payload):
            raise VerifyError("event does not match its signature (modified after signing)")
        return names

    def _context_digests(self, values: tuple[Any, ...]) -> bytes:
        """The digests of the context attributes after ``id``, joined.

        Kept when every value is None or a string of at most :attr:`MAX_TEXT_LEN` characters: only None
        equals None and only a string equals a string, so a later hit is for the same texts.
        """
        texts = self._texts
        out = []
        plain = True
        for v in values:
            if v is None:
                out.append(_EMPTY)
            elif type(v) is str:
                d = texts.get(v)
                out.append(self._digest(v) if d is None else d)
                plain = plain and len(v) <= self.MAX_TEXT_LEN
            else:
                plain = False
                out.append(_h_value(v))
        joined = b"".join(out)
        if plain:
            if len(self._contexts) >= self.MAX_CONTEXTS:
                self._contexts.clear()
            self._contexts[values] = joined
        return joined

    def _digest(self, text: str) -> bytes:
        """Digest of a string not in the cache; kept unless it is long."""
        d = _sha256(text.encode()).digest()
        if len(text) <= self.MAX_TEXT_LEN:
            if len(self._texts) >= self.MAX_TEXTS:
                self._texts.clear()
            self._texts[text] = d
        return d

    def _ext_names(self, event: Mapping[str, Any]) -> tuple[str, ...]:
        """``signedextattrs`` read and validated; kept when it is a string that is not long."""
        names = tuple(signed_ext_names(event))
        raw = event["signedextattrs"]
        if type(raw) is str and len(raw) <= self.MAX_TEXT_LEN:
            if len(self._ext) >= self.MAX_EXT:
                self._ext.clear()
            self._ext[raw] = names
        return names


#: the caches behind verify_event and check_event (its own trust store is empty: callers pass theirs)
_SHARED = EventChecker({})


def verify_event(event: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> dict[str, Any]:
    """Verify ``event`` against trusted ``keys`` (key id -> key).

    Returns a new event holding only what the signature covers: the context
    attributes, the data, and the signed extension attributes. Raises
    :class:`VerifyError` with the reason otherwise.
    """
    return _covered(event, _SHARED._names(event, _trusted_in(keys)))


def check_event(event: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> None:
    """The checks of :func:`verify_event`, without building the verified event."""
    _SHARED._names(event, _trusted_in(keys))
