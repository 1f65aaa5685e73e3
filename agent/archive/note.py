"""C2SP signed notes with Ed25519, and the ``tlog-checkpoint`` text they carry. Pure.

A signed note is a UTF-8 text ending in a newline, a blank line, then one or
more lines ``— <key name> <base64(key id || signature)>``. The key id is the
first four bytes of ``SHA-256(key name || 0x0A || 0x01 || raw Ed25519 public
key)``; the signature is Ed25519 over the note text (final newline included).

A checkpoint's text is three lines: the log's origin, the tree size in decimal
and the base64 root hash. The archive signs it under the key name = origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import VerifyError
from ..signing.keys import VerifyKey

__all__ = [
    "Checkpoint",
    "NoteSignature",
    "NoteSigner",
    "checkpoint_text",
    "key_hash",
    "parse_checkpoint",
    "parse_note",
    "sign_note",
    "verify_checkpoint",
    "verify_note",
]

_DASH = "\u2014 "
ED25519 = b"\x01"
MAX_NOTE = 64 * 1024


class NoteSigner(Protocol):
    """What signs a note: the host's ``SigningKey`` fits."""

    public_raw: bytes

    def sign(self, data: bytes, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_hash: bytes
    sig: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    #: the whole signed note, as stored
    note: str


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_hash(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_raw).digest()[:4]


def sign_note(text: str, name: str, key: NoteSigner) -> str:
    """The signed note of ``text`` (which must end in a newline) by ``key`` under ``name``."""
    if not text.endswith("\n") or not _valid_name(name):
        raise ValueError("note text must end in a newline and the key name must have no spaces or '+'")
    sig = key_hash(name, key.public_raw) + key.sign(text.encode())
    return f"{text}\n{_DASH}{name} {base64.b64encode(sig).decode('ascii')}\n"


def parse_note(note: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signatures; raise VerifyError if malformed."""
    if len(note) > MAX_NOTE:
        raise VerifyError("signed note is too large")
    if any(c < " " and c != "\n" for c in note):
        raise VerifyError("signed note contains control characters")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise VerifyError("signed note has no signature block")
    text, block = note[: cut + 1], note[cut + 2 :]
    sigs: list[NoteSignature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise VerifyError(f"malformed signature line {line[:40]!r}")
        name, sp, b64 = line[len(_DASH) :].rpartition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise VerifyError(f"signature of {name!r} is not base64") from None
        if base64.b64encode(raw).decode("ascii") != b64:
            raise VerifyError(f"signature of {name!r} is not canonical base64")
        if not sp or not _valid_name(name) or len(raw) < 5:
            raise VerifyError(f"malformed signature line {line[:40]!r}")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    return text, sigs


def _ed25519_raw(key: VerifyKey) -> bytes | None:
    if not isinstance(key.public, ed25519.Ed25519PublicKey):
        return None
    return key.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_note(note: str, keys: Iterable[VerifyKey] | Mapping[str, VerifyKey], name: str) -> str:
    """Return the note text if a signature under ``name`` by one of ``keys`` verifies."""
    text, sigs = parse_note(note)
    pool = list(keys.values()) if isinstance(keys, Mapping) else list(keys)
    known = {}
    for k in pool:
        raw = _ed25519_raw(k)
        if raw is not None:
            known[key_hash(name, raw)] = k
    matched = [s for s in sigs if s.name == name and s.key_hash in known]
    if not matched:
        raise VerifyError(f"checkpoint is not signed by a trusted key under the name {name!r}")
    for s in matched:
        if not known[s.key_hash].verify(s.sig, text.encode()):
            raise VerifyError("checkpoint signature does not verify")
    return text


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def parse_checkpoint(note: str) -> Checkpoint:
    """Parse (without verifying) the checkpoint carried by a signed note."""
    text, _sigs = parse_note(note)
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise VerifyError("checkpoint text must have at least three non-empty lines")
    origin, size_s, root_s = lines[:3]
    if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")) or not size_s.isascii():
        raise VerifyError(f"checkpoint tree size {size_s!r} is not a decimal number")
    try:
        root = base64.b64decode(root_s, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError("checkpoint root hash is not base64") from None
    if base64.b64encode(root).decode("ascii") != root_s:
        raise VerifyError("checkpoint root hash is not canonical base64")
    if len(root) != 32:
        raise VerifyError("checkpoint root hash is not 32 bytes")
    return Checkpoint(origin=origin, size=int(size_s), root=root, note=note)


def verify_checkpoint(note: str, keys: Iterable[VerifyKey] | Mapping[str, VerifyKey]) -> Checkpoint:
    """Parse a checkpoint and check its signature under its own origin as the key name."""
    cp = parse_checkpoint(note)
    verify_note(note, keys, cp.origin)
    return cp
