"""Merkle tree: RFC 6962 vectors, compact ranges, proofs built from O(log n) state, altered proofs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.archive.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeTable,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of_leaves,
    verify_consistency,
    verify_inclusion,
)

# the leaves and roots of the RFC 6962 reference test data (certificate-transparency test vectors)
VECTOR_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
                 bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def hashes(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert CompactRange(0).root() == EMPTY_ROOT


def test_rfc6962_reference_roots() -> None:
    r = CompactRange(0)
    for i, data in enumerate(VECTOR_LEAVES):
        r.append(leaf_hash(data))
        assert r.root().hex() == VECTOR_ROOTS[i]


def test_reference_consistency_proof_6_to_8() -> None:
    leaves = [leaf_hash(d) for d in VECTOR_LEAVES]
    table = NodeTable((i, i + 1, h) for i, h in enumerate(leaves))
    proof = consistency_proof(6, 8, table)
    assert [p.hex() for p in proof] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    old, new = bytes.fromhex(VECTOR_ROOTS[5]), bytes.fromhex(VECTOR_ROOTS[7])
    assert verify_consistency(6, 8, old, new, proof)
    assert not verify_consistency(6, 8, bytes.fromhex(VECTOR_ROOTS[4]), new, proof)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_frontier_root_matches_reference(n: int, data: st.DataObject) -> None:
    hs = hashes(n)
    r = CompactRange(0)
    r.extend(hs)
    assert r.root() == root_of_leaves(hs)
    again = CompactRange.from_frontier(n, r.hashes())
    assert again.root() == r.root()
    begin = data.draw(st.integers(0, n))
    part = CompactRange(begin)
    part.extend(hs[begin:])
    # a compact range's nodes are aligned, maximal and cover exactly [begin, n)
    nodes = part.nodes()
    assert [a for a, _b, _h in nodes] == sorted(a for a, _b, _h in nodes)
    assert sum(b - a for a, b, _h in nodes) == n - begin
    for a, b, h in nodes:
        assert a % (b - a) == 0 and h == root_of_leaves(hs[a:b])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 200), st.data())
def test_inclusion_from_compact_state(n: int, data: st.DataObject) -> None:
    hs = hashes(n)
    i = data.draw(st.integers(0, n - 1))
    left, right = CompactRange(0), CompactRange(i + 1)
    left.extend(hs[:i])
    right.extend(hs[i + 1:])
    proof = inclusion_proof(i, n, NodeTable(left, [(i, i + 1, hs[i])], right))
    full = inclusion_proof(i, n, NodeTable((k, k + 1, h) for k, h in enumerate(hs)))
    root = root_of_leaves(hs)
    assert proof == full
    assert verify_inclusion(hs[i], i, n, proof, root)
    assert not verify_inclusion(leaf_hash(b"other"), i, n, proof, root)
    if n > 1:
        assert not verify_inclusion(hs[i], (i + 1) % n, n, proof, root)
        bad = list(proof)
        k = data.draw(st.integers(0, len(bad) - 1))
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        assert not verify_inclusion(hs[i], i, n, bad, root)
        assert not verify_inclusion(hs[i], i, n, proof[:-1], root)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 200), st.data())
def test_consistency_from_compact_state(n: int, data: st.DataObject) -> None:
    hs = hashes(n)
    m = data.draw(st.integers(0, n))
    old, since = CompactRange(0), CompactRange(m)
    old.extend(hs[:m])
    since.extend(hs[m:])
    proof = consistency_proof(m, n, NodeTable(old, since))
    assert proof == consistency_proof(m, n, NodeTable((k, k + 1, h) for k, h in enumerate(hs)))
    old_root, new_root = root_of_leaves(hs[:m]), root_of_leaves(hs)
    assert verify_consistency(m, n, old_root, new_root, proof)
    if 0 < m < n:
        assert not verify_consistency(m, n, new_root, new_root, proof)
        assert not verify_consistency(m, n, old_root, old_root, proof)
        bad = list(proof)
        k = data.draw(st.integers(0, len(bad) - 1))
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        assert not verify_consistency(m, n, old_root, new_root, bad)
        assert not verify_consistency(m, n, old_root, new_root, proof[:-1])


def test_node_table_refuses_what_it_cannot_derive() -> None:
    r = CompactRange(0)
    r.extend(hashes(8))
    with pytest.raises(KeyError):
        NodeTable(r)(2, 3)


def test_bad_frontier_is_refused() -> None:
    with pytest.raises(ValueError):
        CompactRange.from_frontier(5, [EMPTY_ROOT])
