"""RFC 6962 / RFC 9162 Merkle tree hashing, compact ranges and proofs. Pure.

Leaves are hashed as ``SHA-256(0x00 || data)`` and interior nodes as
``SHA-256(0x01 || left || right)``; the root of ``n`` leaves splits at the
largest power of two below ``n``. The empty tree's root is ``SHA-256("")``.

A :class:`CompactRange` holds the O(log n) hashes that stand for the leaves
``[begin, end)``: the maximal aligned subtrees covering the range. Started at
0 it is the tree's "frontier", from which the root follows. Proofs are built
by :func:`inclusion_proof` and :func:`consistency_proof` from any oracle that
returns the hash of a subtree ``[a, b)``; :class:`NodeTable` is such an oracle
made of known nodes (a frontier plus a compact range suffices for both kinds
of proof), so neither the writer nor the prover needs every leaf at once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "NodeTable",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of_leaves",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()

#: a subtree hash oracle: ``mth(a, b)`` is the Merkle tree hash of leaves ``[a, b)``
Oracle = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_leaves(hashes: Sequence[bytes]) -> bytes:
    """Reference root of a list of leaf hashes (recursive, for tests and small trees)."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(root_of_leaves(hashes[:k]), root_of_leaves(hashes[k:]))


class CompactRange:
    """The maximal aligned subtrees covering leaves ``[begin, end)``, appendable in O(log n)."""

    __slots__ = ("_hashes", "_sizes", "_starts", "begin", "end")

    def __init__(self, begin: int = 0, nodes: Iterable[tuple[int, int, bytes]] = ()) -> None:
        self.begin = begin
        self.end = begin
        self._starts: list[int] = []
        self._sizes: list[int] = []
        self._hashes: list[bytes] = []
        for start, stop, h in nodes:
            if start != self.end or stop <= start:
                raise ValueError(f"node [{start}, {stop}) does not continue the range at {self.end}")
            self._starts.append(start)
            self._sizes.append(stop - start)
            self._hashes.append(h)
            self.end = stop

    @classmethod
    def from_frontier(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """The range ``[0, size)`` from its frontier hashes (one per set bit of ``size``, largest first)."""
        sizes = [1 << b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]
        if len(sizes) != len(hashes):
            raise ValueError(f"a tree of {size} leaves has {len(sizes)} frontier hashes, not {len(hashes)}")
        nodes, start = [], 0
        for sz, h in zip(sizes, hashes, strict=True):
            nodes.append((start, start + sz, h))
            start += sz
        return cls(0, nodes)

    def append(self, h: bytes) -> None:
        """Add the next leaf hash."""
        starts, sizes, hashes = self._starts, self._sizes, self._hashes
        start, size = self.end, 1
        while sizes and sizes[-1] == size and starts[-1] % (size << 1) == 0:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            start = starts.pop()
            sizes.pop()
            size <<= 1
        starts.append(start)
        sizes.append(size)
        hashes.append(h)
        self.end += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def nodes(self) -> list[tuple[int, int, bytes]]:
        return [(s, s + z, h) for s, z, h in zip(self._starts, self._sizes, self._hashes, strict=True)]

    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.begin, self.nodes())

    def root(self) -> bytes:
        """The root of the leaves ``[0, end)``; only for a range that begins at 0."""
        if self.begin != 0:
            raise ValueError("the root is defined for a range that begins at leaf 0")
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h


class NodeTable:
    """A subtree-hash oracle over known nodes; raises ``KeyError`` for a node it cannot derive."""

    __slots__ = ("_known",)

    def __init__(self, *ranges: CompactRange | Iterable[tuple[int, int, bytes]]) -> None:
        self._known: dict[tuple[int, int], bytes] = {}
        for r in ranges:
            for a, b, h in r.nodes() if isinstance(r, CompactRange) else r:
                self._known[(a, b)] = h

    def __call__(self, a: int, b: int) -> bytes:
        h = self._known.get((a, b))
        if h is not None:
            return h
        if b - a < 2:
            raise KeyError(f"no hash for leaves [{a}, {b})")
        k = _split(b - a)
        h = node_hash(self(a, a + k), self(a + k, b))
        self._known[(a, b)] = h
        return h


def inclusion_proof(index: int, size: int, mth: Oracle) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 6962 PATH)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    out: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            out.append(mth(lo + k, hi))
            hi = lo + k
        else:
            out.append(mth(lo, lo + k))
            lo, m = lo + k, m - k
    out.reverse()
    return out


def consistency_proof(old: int, new: int, mth: Oracle) -> list[bytes]:
    """The proof that the tree of ``new`` leaves extends the tree of ``old`` (RFC 6962 PROOF)."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    out: list[bytes] = []
    lo, hi, m, whole = 0, new, old, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append(mth(lo + k, hi))
            hi = lo + k
        else:
            out.append(mth(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        out.append(mth(lo, hi))
    out.reverse()
    return out


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2, with the trivial cases (``old`` 0 or equal sizes) made explicit."""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and hmac.compare_digest(old_root, new_root)
    if old == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)
