"""DSSE v1.0.2: pre-authentication encoding and the JSON envelope.

Reading an envelope is on the path of every verified event, so it stays lean:
base64 is first decoded in ``binascii``'s strict mode, which accepts only
strings the full check (:func:`b64d`) accepts as well, with the same bytes; only
what strict mode refuses (URL-safe text, surplus padding, garbage) takes the
slower exact route. :func:`envelope_parts` returns plain tuples;
:func:`parse_envelope` wraps the same reading in dataclasses.

An envelope laid out byte for byte as :func:`encode_envelope` writes it (with
the verifiability payload type, a 32-byte payload, one signature of 64 bytes
and a 64-character key id) is read by slicing at the known offsets instead of
by a JSON parser. It is taken only when every slice is what a parser would find
there: the fixed parts match, the key id is ASCII letters and digits, and both
base64 fields decode in strict mode (so they hold no quote or backslash). Any
other envelope, valid or not, goes through the parser.
"""

from __future__ import annotations

import base64
import binascii
from binascii import a2b_base64, b2a_base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..codec.exact import duplicate_name
from ..errors import VerifyError

#: the payload type of the CloudEvents verifiability extension
PAYLOAD_TYPE = "https://cloudevents.io/verifiability/dsse/v0.1"

__all__ = [
    "PAYLOAD_TYPE",
    "Envelope",
    "Signature",
    "b64d",
    "b64d_canonical",
    "canonical_base64",
    "encode_envelope",
    "envelope_parts",
    "noncanonical",
    "pae",
    "parse_envelope",
    "strict_base64",
]


def pae(payload_type: bytes, body: bytes) -> bytes:
    """``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with ASCII decimal lengths."""
    return b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type, len(body), body)


def strict_base64(text: str) -> bool:
    """Whether ``text`` is base64 as CloudEvents' JSON format carries ``data_base64``: RFC 4648's standard
    alphabet, padded, nothing else (the URL-safe alphabet is not it), and canonical: the bits padding leaves
    over are zero (``aGk=``, not ``aGl=``, for ``hi``), so that one value has one spelling."""
    try:
        raw = a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return False
    return not text.endswith("=") or b2a_base64(raw, newline=False) == text.encode("ascii")


def b64d(text: Any, what: str) -> bytes:
    """Strict standard base64 (RFC 4648); URL-safe input is accepted too, as DSSE allows."""
    if not isinstance(text, str):
        raise VerifyError(f"{what}: expected a base64 string")
    try:
        # strict mode accepts a subset of what the lines below accept (standard alphabet, padding only at the
        # end and only as much as is due), decoded to the same bytes; everything else is judged below
        return a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError(f"{what}: not valid base64") from None


def canonical_base64(text: str, raw: bytes) -> bool:
    """Whether ``text`` is the one spelling of ``raw``, the bytes it decoded to: encoding them again in its
    alphabet gives ``text`` back (URL-safe text may leave its padding off, as DSSE allows). Decoders ignore the
    bits of the last character that encode no byte (``aGk=`` and ``aGl=`` are both ``hi``), and lenient ones
    skip stray characters: without this check one value would have many spellings."""
    if "-" in text or "_" in text:
        again = base64.urlsafe_b64encode(raw).decode("ascii")
        return text in (again, again.rstrip("="))
    return b2a_base64(raw, newline=False).decode("ascii") == text


def b64d_canonical(text: Any, what: str) -> bytes:
    """:func:`b64d`, refusing a value that is not the canonical spelling of its bytes (:func:`canonical_base64`)."""
    raw = b64d(text, what)
    if not canonical_base64(text, raw):
        raise VerifyError(noncanonical(what))
    return raw


def noncanonical(what: str) -> str:
    """The reason given for base64 that is not canonical."""
    return (f"{what}: not canonical base64 (encoding its bytes again gives another text: the unused bits of its "
            "last character are not zero, or it holds characters decoding skips)")


@dataclass(frozen=True, slots=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]


def encode_envelope(payload_type: str, payload: bytes, keyid: str, sig: bytes) -> bytes:
    """The envelope JSON, fields in the order the specification shows them."""
    return b"".join(
        (
            b'{"payloadType":',
            orjson.dumps(payload_type),
            b',"payload":"',
            base64.b64encode(payload),
            b'","signatures":[{"keyid":',
            orjson.dumps(keyid),
            b',"sig":"',
            base64.b64encode(sig),
            b'"}]}',
        )
    )


# the layout encode_envelope writes for a verifiability digest signed once by an Ed25519 key
_T_HEAD = b'{"payloadType":' + orjson.dumps(PAYLOAD_TYPE) + b',"payload":"'
_T_MID = b'","signatures":[{"keyid":"'
_T_SIG = b'","sig":"'
_T_TAIL = b'"}]}'
_T_P = len(_T_HEAD)  # payload: 44 base64 characters
_T_M = _T_P + 44
_T_K = _T_M + len(_T_MID)  # key id: 64 characters
_T_G = _T_K + 64
_T_S = _T_G + len(_T_SIG)  # sig: 88 base64 characters
_T_END = _T_S + 88
_T_LEN = _T_END + len(_T_TAIL)


def envelope_parts(raw: bytes) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """An envelope's payload type, payload and ``(keyid, sig)`` pairs; :class:`VerifyError` if malformed."""
    if (
        len(raw) == _T_LEN
        and raw.startswith(_T_HEAD)
        and raw.startswith(_T_MID, _T_M)
        and raw.startswith(_T_SIG, _T_G)
        and raw.endswith(_T_TAIL)
    ):
        # encode_envelope's layout: the parts are where it puts them if they are what a parser would read there
        keyid = raw[_T_K:_T_G]
        try:
            payload = a2b_base64(raw[_T_P:_T_M], strict_mode=True)
            sig = a2b_base64(raw[_T_S:_T_END], strict_mode=True)
        except binascii.Error:
            pass
        else:
            # the key id ASCII letters and digits (a JSON string with nothing to unescape), payload and sig each
            # in its one canonical spelling (any other is refused on the parser's route, with the reason)
            if (keyid.isalnum() and b2a_base64(payload, newline=False) == raw[_T_P:_T_M]
                    and b2a_base64(sig, newline=False) == raw[_T_S:_T_END]):
                return PAYLOAD_TYPE, payload, [(keyid.decode("ascii"), sig)]
    return _parsed_parts(raw)


def _parsed_parts(raw: bytes) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise VerifyError("verification material is not a JSON DSSE envelope") from None
    if not isinstance(doc, Mapping):
        raise VerifyError("verification material is not a JSON object")
    if (name := duplicate_name(raw)) is not None:  # which of the two a reader takes is up to its parser
        raise VerifyError(f"DSSE envelope has the member {name!r} twice")
    ptype = doc.get("payloadType")
    if not isinstance(ptype, str):
        raise VerifyError("DSSE envelope has no payloadType")
    payload = b64d_canonical(doc.get("payload"), "DSSE payload")
    sigs_doc = doc.get("signatures")
    if not isinstance(sigs_doc, list) or not sigs_doc:
        raise VerifyError("DSSE envelope has no signatures")
    sigs = []
    for s in sigs_doc:
        if not isinstance(s, Mapping):
            raise VerifyError("DSSE signature is not an object")
        keyid = s.get("keyid", "")
        if not isinstance(keyid, str):
            raise VerifyError("DSSE keyid is not a string")
        sigs.append((keyid, b64d_canonical(s.get("sig"), "DSSE sig")))
    return ptype, payload, sigs


def parse_envelope(raw: bytes) -> Envelope:
    ptype, payload, sigs = envelope_parts(raw)
    return Envelope(ptype, payload, tuple(Signature(k, sig) for k, sig in sigs))
