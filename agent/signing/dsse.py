"""DSSE v1.0.2: pre-authentication encoding and the JSON envelope."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import VerifyError

__all__ = ["Envelope", "Signature", "b64d", "encode_envelope", "pae", "parse_envelope"]


def pae(payload_type: bytes, body: bytes) -> bytes:
    """``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with ASCII decimal lengths."""
    return b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type, len(body), body)


def b64d(text: Any, what: str) -> bytes:
    """Strict standard base64 (RFC 4648); URL-safe input is accepted too, as DSSE allows."""
    if not isinstance(text, str):
        raise VerifyError(f"{what}: expected a base64 string")
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError(f"{what}: not valid base64") from None


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


def parse_envelope(raw: bytes) -> Envelope:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise VerifyError("verification material is not a JSON DSSE envelope") from None
    if not isinstance(doc, Mapping):
        raise VerifyError("verification material is not a JSON object")
    ptype = doc.get("payloadType")
    if not isinstance(ptype, str):
        raise VerifyError("DSSE envelope has no payloadType")
    payload = b64d(doc.get("payload"), "DSSE payload")
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
        sigs.append(Signature(keyid, b64d(s.get("sig"), "DSSE sig")))
    return Envelope(ptype, payload, tuple(sigs))
