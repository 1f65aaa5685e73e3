"""Signed, chained archive records: encoding, checking, and the few fields each kind has. Pure.

A record is one line of a segment's ``.log``: the RFC 8785 (JCS) bytes of a
JSON object with at least ``v`` (1), ``kind``, ``seg`` (the segment number of
the log it lives in), ``time`` (RFC 3339 UTC), ``prev`` (base64 SHA-256 of the
previous record line of the archive, ``""`` for the very first), ``keyid`` and
``sig``: base64 Ed25519 over ``"hoststamp-archive-record/v1\\n" || JCS(object
without sig)``. Kinds and their own fields:

- ``open``: ``origin``, ``first`` (leaves before this segment), ``frontier``
  (base64 hashes of the tree of ``first`` leaves, largest subtree first)
- ``checkpoint``: ``note`` (the signed C2SP checkpoint), ``prev_size`` and
  ``consistency`` (base64 proof from the previous checkpoint's size)
- ``cut``: ``file``, ``offset``, ``length``, ``sha256`` (base64 of the bytes cut), ``reason``
- ``close``: ``first``, ``count``, ``bytes``, ``sha256`` (base64 of the uncompressed
  events), ``frontier`` (after the last event), ``compression`` (``gzip`` or ``none``)
- ``stop``: ``size``: the writer closed cleanly with this many events, all sealed
- ``resume``: ``size``, ``clean``: a writer opened the archive again; ``clean`` is false when
  the previous writer did not end with a ``stop`` record (it crashed or was killed)
- ``retention``: ``segments`` ([lowest, highest] removed), ``size`` (leaves before the
  first kept segment), ``frontier``, ``chain`` (the ``prev`` the first kept record
  must carry), ``checkpoint`` (the signed checkpoint at ``size``), ``removed_bytes``, ``reason``
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from ..codec.canonical import canonical
from ..codec.exact import duplicate_name
from ..errors import VerifyError
from ..signing.keys import VerifyKey

__all__ = [
    "DOMAIN",
    "KINDS",
    "RecordSigner",
    "b64",
    "b64_list",
    "chain_hash",
    "encode_record",
    "noncanonical",
    "parse_record",
    "rfc3339",
    "unb64",
    "unb64_list",
    "verify_record",
]

DOMAIN = b"hoststamp-archive-record/v1\n"
KINDS = frozenset({"open", "checkpoint", "cut", "close", "retention", "resume", "stop"})
MAX_RECORD = 1 << 20


class RecordSigner(Protocol):
    keyid: str

    def sign(self, data: bytes, /) -> bytes: ...


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def unb64(s: Any, what: str = "value") -> bytes:
    if not isinstance(s, str):
        raise VerifyError(f"{what} is not a base64 string")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError(f"{what} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != s:
        raise VerifyError(f"{what} is not canonical base64")
    return raw


def b64_list(hashes: Sequence[bytes]) -> list[str]:
    return [b64(h) for h in hashes]


def unb64_list(v: Any, what: str) -> list[bytes]:
    if not isinstance(v, list):
        raise VerifyError(f"{what} is not a list")
    out = [unb64(x, what) for x in v]
    if any(len(h) != 32 for h in out):
        raise VerifyError(f"{what} holds a hash that is not 32 bytes")
    return out


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(line: bytes) -> str:
    """The ``prev`` value of the record that follows ``line`` (without its newline)."""
    return b64(hashlib.sha256(line).digest())


def encode_record(fields: Mapping[str, Any], key: RecordSigner) -> bytes:
    """Sign ``fields`` and return the record line (no newline)."""
    body = dict(fields)
    body["v"] = 1
    body["keyid"] = key.keyid
    body.pop("sig", None)
    body["sig"] = b64(key.sign(DOMAIN + canonical(body)))
    return canonical(body)


def parse_record(line: bytes) -> dict[str, Any]:
    """Decode a record line (without newline); raise VerifyError if it is not a record."""
    if len(line) > MAX_RECORD:
        raise VerifyError("record is too large")
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise VerifyError(f"record is not JSON: {exc}") from None
    if not isinstance(rec, dict):
        raise VerifyError("record is not a JSON object")
    kind = rec.get("kind")
    if rec.get("v") != 1 or not isinstance(kind, str) or kind not in KINDS:
        raise VerifyError(f"not a version 1 record of a known kind (kind={rec.get('kind')!r})")
    if not isinstance(rec.get("seg"), int) or not isinstance(rec.get("prev"), str):
        raise VerifyError("record lacks seg or prev")
    return rec


def noncanonical(line: bytes, rec: Mapping[str, Any]) -> str | None:
    """Why the record line ``line`` (parsed: ``rec``) is not exactly the JCS bytes of the record it holds;
    None when it is. The signature covers the parsed record, and only the next record's ``prev`` covers the
    line's bytes: the last line of a log has no such cover, so its form is checked on its own."""
    try:
        if canonical(rec) == line:  # so no member twice either: JCS writes each once
            return None
    except ValueError as exc:
        return f"the record cannot be canonicalized: {exc}"
    if (name := duplicate_name(line)) is not None:
        return f"member name {name!r} appears twice (readers disagree on which value counts)"
    return ("the line is not the RFC 8785 (JCS) serialization of the record it holds (spaces, escapes, number "
            "forms or a carriage return that JCS does not write)")


def verify_record(rec: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> None:
    """Check a parsed record's signature against trusted ``keys``."""
    keyid, sig = rec.get("keyid"), rec.get("sig")
    if not isinstance(keyid, str) or keyid not in keys:
        raise VerifyError(f"record is not signed by a trusted key (keyid {str(keyid)[:16]})")
    body = {k: v for k, v in rec.items() if k != "sig"}
    try:
        msg = DOMAIN + canonical(body)
    except ValueError as exc:
        raise VerifyError(f"record cannot be canonicalized: {exc}") from None
    if not keys[keyid].verify(unb64(sig, "record signature"), msg):
        raise VerifyError("record signature does not verify")
