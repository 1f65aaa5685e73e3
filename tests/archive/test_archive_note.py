"""C2SP signed notes and checkpoints: the Go sumdb reference vector, round trips, tampering."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.archive.note import (
    checkpoint_text,
    key_hash,
    parse_checkpoint,
    parse_note,
    sign_note,
    verify_checkpoint,
    verify_note,
)
from agent.errors import VerifyError
from agent.signing.keys import SigningKey, VerifyKey

# golang.org/x/mod/sumdb/note: the documented example key and note (Ed25519 signs deterministically)
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann " + GO_SIG + "\n"


def go_key() -> SigningKey:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 1
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(raw[1:]))


def test_reproduces_the_go_reference_note() -> None:
    k = go_key()
    assert key_hash("PeterNeumann", k.public_raw).hex() == "c74f20a3"
    assert sign_note(GO_TEXT, "PeterNeumann", k) == GO_NOTE
    assert verify_note(GO_NOTE, [k.verify_key()], "PeterNeumann") == GO_TEXT


def test_tampered_or_foreign_notes_fail() -> None:
    vk = go_key().verify_key()
    with pytest.raises(VerifyError):
        verify_note(GO_NOTE.replace("cryptography", "cryptographY"), [vk], "PeterNeumann")
    with pytest.raises(VerifyError, match="not signed by a trusted key"):
        verify_note(GO_NOTE, [SigningKey.generate().verify_key()], "PeterNeumann")
    with pytest.raises(VerifyError, match="not signed by a trusted key"):
        verify_note(GO_NOTE, [vk], "SomeoneElse")


def test_checkpoint_round_trip(key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    root = bytes(range(32))
    note = sign_note(checkpoint_text("example.org/log", 42, root), "example.org/log", key)
    lines = note.split("\n")
    assert lines[:4] == ["example.org/log", "42", base64.b64encode(root).decode(), ""]
    assert lines[4].startswith("\u2014 example.org/log ")
    cp = verify_checkpoint(note, keys)
    assert (cp.origin, cp.size, cp.root) == ("example.org/log", 42, root)
    text, sigs = parse_note(note)
    assert text == checkpoint_text("example.org/log", 42, root)
    assert sigs[0].key_hash == key_hash("example.org/log", key.public_raw)
    with pytest.raises(VerifyError):
        verify_checkpoint(note.replace("\n42\n", "\n43\n"), keys)


@pytest.mark.parametrize("bad", [
    "no signature block\n",
    "o\n1\nAAAA\n\nnot a signature line\n",
    "o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 o AAAAAAA=\n",
    "o\n1\nAAAA\n\n\u2014 o AAAAAAA=\n",
    "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 o !!!\n",
])
def test_malformed_checkpoints_are_refused(bad: str) -> None:
    with pytest.raises(VerifyError):
        parse_checkpoint(bad)


def test_key_names_with_spaces_or_plus_are_refused(key: SigningKey) -> None:
    for name in ("a b", "a+b", ""):
        with pytest.raises(ValueError):
            sign_note("text\n", name, key)
