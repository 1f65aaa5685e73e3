"""A second reader of the archive, written from docs/archive.md alone, must agree with the writer.

It shares no code with agent.archive: hashlib, rfc8785, gzip and cryptography only. If the format drifts
from its document, this test fails.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.signing.keys import SigningKey
from tests.archive.archive_helpers import events, write_archive


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def frontier(leaves: list[bytes]) -> list[str]:
    out, start, n = [], 0, len(leaves)
    for bit in range(n.bit_length() - 1, -1, -1):
        if n >> bit & 1:
            out.append(base64.b64encode(mth(leaves[start:start + (1 << bit)])).decode())
            start += 1 << bit
    return out


def read_archive(root: Path, public: bytes) -> tuple[list[bytes], list[dict[str, Any]]]:
    pub = Ed25519PublicKey.from_public_bytes(public)
    keyid = hashlib.sha256(public).hexdigest()
    leaves: list[bytes] = []
    records: list[dict[str, Any]] = []
    prev = ""
    n = 1
    while (root / f"seg-{n:08d}.log").exists():
        plain, gz = root / f"seg-{n:08d}.ndjson", root / f"seg-{n:08d}.ndjson.gz"
        data = gzip.decompress(gz.read_bytes()) if gz.exists() else plain.read_bytes()
        seg_leaves = data.split(b"\n")[:-1]
        for line in (root / f"seg-{n:08d}.log").read_bytes().split(b"\n")[:-1]:
            rec = json.loads(line)
            assert rfc8785.dumps(rec) == line, "records are stored in their JCS form"
            assert rec["v"] == 1 and rec["seg"] == n and rec["prev"] == prev and rec["keyid"] == keyid
            body = {k: v for k, v in rec.items() if k != "sig"}
            pub.verify(base64.b64decode(rec["sig"]), b"hoststamp-archive-record/v1\n" + rfc8785.dumps(body))
            prev = base64.b64encode(hashlib.sha256(line).digest()).decode()
            if rec["kind"] == "open":
                assert rec["first"] == len(leaves) and rec["frontier"] == frontier(leaves)
            if rec["kind"] == "close":
                assert rec["count"] == len(seg_leaves) and rec["bytes"] == len(data)
                assert base64.b64decode(rec["sha256"]) == hashlib.sha256(data).digest()
                assert rec["frontier"] == frontier(leaves + seg_leaves)
            records.append(rec)
        leaves += seg_leaves
        n += 1
    return leaves, records


def check_checkpoint(note: str, leaves: list[bytes], public: bytes) -> int:
    text, sigs = note.split("\n\n")
    origin, size, root = text.split("\n")
    assert sigs.startswith(f"\u2014 {origin} ") and sigs.endswith("\n")
    blob = base64.b64decode(sigs[len(origin) + 3:-1])
    assert blob[:4] == hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]
    Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], (text + "\n").encode())
    assert base64.b64decode(root) == mth(leaves[:int(size)])
    return int(size)


def test_an_independent_reader_agrees(archive_dir: Path, key: SigningKey) -> None:
    evs = events(key, 1, 50)
    write_archive(archive_dir, key, [evs[i:i + 7] for i in range(0, 50, 7)], segment_max_bytes=12_000,
                  checkpoint_every=9)
    leaves, records = read_archive(archive_dir, key.public_raw)
    assert leaves == evs
    sizes = [check_checkpoint(r["note"], leaves, key.public_raw) for r in records if r["kind"] == "checkpoint"]
    assert sizes == sorted(sizes) and sizes[-1] == 50
    prev_sizes = [r["prev_size"] for r in records if r["kind"] == "checkpoint"]
    assert prev_sizes == [0, *sizes[:-1]]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "open" and kinds[-1] == "stop" and kinds.count("close") == kinds.count("open") - 1
