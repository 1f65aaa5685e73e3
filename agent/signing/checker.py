"""Verification of the CloudEvents verifiability extension, fast enough for a receiver.

There is one implementation of every check (``EventChecker._names``) behind
three doors: :func:`verify_event` returns what the signature covers,
:func:`check_event` only says yes (returns) or no (raises), and
:class:`EventChecker` makes the same checks for a receiver that sees event
after event under one trust store (it reads the store once, when it is made,
and keeps each trusted key's signature check). :func:`verify_event` and
:func:`check_event` run on one shared checker with an empty trust store, the
caller's keys passed per call, so the three cannot drift apart. The material
is the one :func:`~agent.signing.event.material` defines, computed inline with
the same helpers (:func:`~agent.signing.event.normalize_time`,
:func:`~agent.signing.event.data_bytes`, :func:`~agent.signing.event.attr_text`).

What is cached, and why: the attribute values that repeat from event to event.
A checker keeps, in dicts each emptied when it reaches its bound, the digests
of single strings (source, type, subject, extension names, the normalized
time; :attr:`EventChecker.MAX_TEXTS`), the joined digests of the context
attributes after ``id`` (a sender's source, specversion, type,
datacontenttype, dataschema and subject come in few combinations;
:attr:`EventChecker.MAX_CONTEXTS`) and validated ``signedextattrs`` strings
(:attr:`EventChecker.MAX_EXT`). A kept digest is a pure function of its key,
so a cache can make a check cheaper but never change its answer.

Where the native part is built, :class:`EventChecker` first asks
:class:`agent._native.restamp.Checker` (the same checks in C, Ed25519 by
libsodium) whether the event verifies; it says yes only for an event in the
envelope layout :func:`~agent.signing.dsse.encode_envelope` writes, signed by a
trusted Ed25519 key, whose material it can compute whole. Everything else, every
refusal among it, is decided (and explained) by the Python checks below.

What is never cached: values unique to an event (``id``, the data, extension
values) are hashed directly; no string longer than
:attr:`EventChecker.MAX_TEXT_LEN` characters is kept, so a sender inventing
values costs memory only up to the bounds; and only strings (and None) are
keys, since ``1`` and ``True`` are equal dict keys but different attribute
texts. Signature checks and their outcomes are never kept: every event's
signature is checked.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from binascii import a2b_base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .. import _native
from ..codec.canonical import canonical
from ..errors import VerifyError
from .dsse import (
    _T_HEAD,
    _T_MID,
    _T_SIG,
    _T_TAIL,
    PAYLOAD_TYPE,
    b64d,
    canonical_base64,
    envelope_parts,
    noncanonical,
    pae,
)
from .event import _EMPTY, _PT, CORE_ATTRIBUTES, attr_text, data_bytes, normalize_time, signed_ext_names
from .keys import VerifyKey

__all__ = ["MAX_CHECKS", "EventChecker", "check_event", "verify_event"]

#: the pre-authentication encoding of a 32-byte payload, up to the payload
_PAE32_HEAD = pae(_PT, bytes(32))[:-32]

#: a trusted key's signature check: returns for a good signature, raises InvalidSignature (or ValueError) otherwise
_SignatureCheck = Callable[[bytes, bytes], object]


def _signature_check(key: VerifyKey) -> _SignatureCheck:
    """The cheapest call that checks a signature by ``key``: for an Ed25519 key, libsodium's where the native
    part is built (a fifth cheaper than OpenSSL's through the cryptography package), else the key's own
    ``verify``."""
    public = getattr(key, "public", None)
    if type(key) is VerifyKey and isinstance(public, Ed25519PublicKey):
        native = _native.verify_detached
        if native is None:
            return public.verify
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)

        def libsodium(sig: bytes, msg: bytes) -> None:
            if len(sig) != 64 or not native(sig, msg, raw):  # no Ed25519 signature has another length
                raise InvalidSignature

        return libsodium

    def check(sig: bytes, msg: bytes) -> None:
        if not key.verify(sig, msg):
            raise InvalidSignature

    return check


def _trusted_in(keys: Mapping[str, VerifyKey]) -> dict[str, _SignatureCheck]:
    return {keyid: _signature_check(key) for keyid, key in keys.items()}


#: signature checks made for one event at most: an envelope of thousands of signatures (or of signatures
#: without a key id, each tried with every trusted key) must not make one event cost seconds
MAX_CHECKS = 16


_sha256 = hashlib.sha256


def _native_checker(keys: Mapping[str, VerifyKey], ext: dict[str, tuple[str, ...]]) -> Any:
    """A :class:`agent._native.restamp.Checker` for the Ed25519 keys among ``keys``, reading ``ext`` (the
    Python checker's ``signedextattrs`` cache); None when it is not built or there is no such key."""
    if _native.Checker is None:
        return None
    raw = {keyid: key.public.public_bytes(Encoding.Raw, PublicFormat.Raw) for keyid, key in keys.items()
           if type(key) is VerifyKey and isinstance(getattr(key, "public", None), Ed25519PublicKey)}
    if not raw:
        return None
    return _native.Checker(raw, ext, _PAE32_HEAD, _T_HEAD, _T_MID, _T_SIG, _T_TAIL)


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

    __slots__ = ("_contexts", "_ext", "_native", "_texts", "_trusted")

    def __init__(self, keys: Mapping[str, VerifyKey]) -> None:
        self._trusted = {keyid: _signature_check(key) for keyid, key in keys.items()}
        self._texts: dict[str, bytes] = {}
        self._ext: dict[str, tuple[str, ...]] = {}
        self._contexts: dict[tuple[Any, ...], bytes] = {}
        #: the native check of the common case (None: not built, or no Ed25519 key to check with)
        self._native = _native_checker(keys, self._ext)

    def check(self, event: Mapping[str, Any]) -> None:
        """Return if ``event`` verifies; raise :class:`VerifyError` with the reason otherwise."""
        if self._native is not None and self._native.verifies(event):
            return
        self._names(event, self._trusted)

    def verify(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """As :func:`verify_event`: what the signature covers. The native check, where it says yes, has read the
        signed names from this checker's cache of validated ``signedextattrs``: they are taken from there."""
        if self._native is not None and self._native.verifies(event):
            ext = event.get("signedextattrs")
            names = () if ext is None or ext == "" else self._ext.get(ext) if type(ext) is str else None
            if names is not None:
                return _covered(event, names)
        return _covered(event, self._names(event, self._trusted))

    def _names(self, event: Mapping[str, Any], trusted: Mapping[str, _SignatureCheck]) -> Sequence[str]:
        try:
            return self._checked_names(event, trusted)
        except UnicodeEncodeError:  # a string with a lone surrogate (JSON parsers refuse them; other decoders may not)
            raise VerifyError("an attribute is not valid Unicode") from None

    def cache_sizes(self) -> tuple[int, int, int]:
        """Entries held now: (value digests, context digests, ``signedextattrs`` strings)."""
        return len(self._texts), len(self._contexts), len(self._ext)

    @staticmethod
    def _signed(sigs: Sequence[tuple[str, bytes]], msg: bytes, trusted: Mapping[str, _SignatureCheck]) -> bool:
        """Whether a trusted key made one of ``sigs`` over ``msg``; False if no trusted key could have (none is
        named, and none without a key id); VerifyError when one could have and none did."""
        tried = 0
        for keyid, sig in sigs:
            if keyid:
                check = trusted.get(keyid)
                checks: Sequence[_SignatureCheck] = () if check is None else (check,)
            else:
                checks = tuple(trusted.values())
            for check in checks:
                if tried == MAX_CHECKS:
                    raise VerifyError(f"signature does not verify (gave up after {MAX_CHECKS} checks)")
                tried += 1
                try:
                    check(sig, msg)
                except (InvalidSignature, ValueError):
                    continue
                return True
        if tried:
            raise VerifyError("signature does not verify")
        return False

    def _checked_names(self, event: Mapping[str, Any], trusted: Mapping[str, _SignatureCheck]) -> Sequence[str]:
        """Every check of the verifiability extension; the signed extension names, or VerifyError.

        ``trusted`` maps the key id of each trusted key to its signature check. A signature without a key id
        (DSSE makes it an optional hint) is tried with every trusted key; no more than :data:`MAX_CHECKS`
        checks are made.
        """
        raw = event.get("dssematerial")
        if not raw:
            raise VerifyError("event is not signed (no dssematerial)")
        try:  # b64d's common case, inline
            env = a2b_base64(raw, strict_mode=True) if type(raw) is str else b64d(raw, "dssematerial")
        except (binascii.Error, ValueError):
            env = b64d(raw, "dssematerial")
        if not canonical_base64(raw, env):  # another spelling of the same envelope: one value, one spelling
            raise VerifyError(noncanonical("dssematerial"))
        ptype, payload, sigs = envelope_parts(env)
        if ptype != PAYLOAD_TYPE:
            raise VerifyError(f"unknown verification payload type {ptype!r}")
        msg = _PAE32_HEAD + payload if len(payload) == 32 else pae(_PT, payload)
        if not self._signed(sigs, msg, trusted):
            ids = ", ".join(keyid[:16] or "(no key id)" for keyid, _ in sigs) or "none"
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
            if event.get(name) is None:  # JSON format: null is absent
                raise VerifyError(f"signed extension attribute {name!r} is {'null' if name in event else 'missing'}")
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
        """``signedextattrs`` read and validated; kept when it is a string that is not long.

        The native check reads this cache as names already validated: nothing else may write to it."""
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
