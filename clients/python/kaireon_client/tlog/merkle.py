"""RFC 9162 (Certificate Transparency v2) Merkle trees, section 2.1.

One implementation for the server (which generates proofs) and the auditor (which
verifies them): leaf and node hashing, the Merkle tree hash (MTH) of a list of leaf
hashes, inclusion and consistency proofs (generation and verification), and
`CompactRange`, the O(log n) frontier of a growing tree that a log persists to
integrate new entries in O(new entries).

Verification follows the iterative algorithms of RFC 9162 sections 2.1.3.2 and
2.1.4.2 exactly; generation follows the recursive definitions PATH and SUBPROOF of
sections 2.1.3.1 and 2.1.4.1. Every failure raises `ProofError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "LeafHashes",
    "NodeSource",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# MTH({}) = SHA-256() (RFC 9162 section 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# Tree sizes are uint64 on the wire (RFC 9162 and C2SP); checkpoints bound them to 2**63-1.
MAX_TREE_SIZE = 2**63 - 1


class ProofError(ValueError):
    """A proof, hash or size that does not verify (or is malformed)."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || leaf): the hash of one entry."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): the size of the left subtree."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be a {HASH_SIZE}-byte SHA-256 hash")


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (not of raw entries: hash those with `leaf_hash`)."""
    frontier = CompactRange()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


class NodeSource(Protocol):
    """Where proof generation reads subtree hashes from.

    `range_hash(start, end)` is MTH(D[start:end]) of the tree's leaves; generation
    only asks for ranges that RFC 9162 proofs use (a log may answer from stored
    perfect-subtree hashes, e.g. tlog tiles, instead of hashing leaves again)."""

    def range_hash(self, start: int, end: int) -> bytes: ...


@dataclass
class LeafHashes:
    """A `NodeSource` over an in-memory list of leaf hashes (caches perfect subtrees)."""

    leaves: Sequence[bytes]
    _cache: dict[tuple[int, int], bytes] = field(default_factory=dict, repr=False)

    def range_hash(self, start: int, end: int) -> bytes:
        if not 0 <= start < end <= len(self.leaves):
            raise ProofError(f"leaf range [{start}, {end}) is outside the tree")
        if end - start == 1:
            return self.leaves[start]
        key = (start, end)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        k = _split(end - start)
        value = node_hash(self.range_hash(start, start + k), self.range_hash(start + k, end))
        self._cache[key] = value
        return value


def _source(tree: NodeSource | Sequence[bytes]) -> NodeSource:
    return LeafHashes(tree) if isinstance(tree, Sequence) else tree


def inclusion_proof(tree: NodeSource | Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]): the audit path of leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    source = _source(tree)
    proof: list[bytes] = []
    start, end = 0, size
    # Walk from the root down; the siblings come out root-first, the proof is leaf-first.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(source.range_hash(start + k, end))
            end = start + k
        else:
            proof.append(source.range_hash(start, start + k))
            start += k
    proof.reverse()
    return proof


def consistency_proof(
    tree: NodeSource | Sequence[bytes], old_size: int, new_size: int
) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) for 0 < old_size <= new_size (empty when equal)."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    source = _source(tree)
    proof: list[bytes] = []
    # SUBPROOF(m, D[start:end], b), unrolled; hashes come out root-first.
    m, start, end, complete = old_size, 0, new_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(source.range_hash(start + k, end))
            end = start + k
        else:
            proof.append(source.range_hash(start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        proof.append(source.range_hash(start, end))
    proof.reverse()
    return proof


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` implies for `leaf` (a leaf hash) at `index` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "inclusion proof hash")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
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
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows `leaf` (a leaf hash) at `index` under `root`."""
    if root_from_inclusion_proof(leaf, index, size, proof) != root:
        raise ProofError(f"inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Raise ProofError unless `proof` shows the tree of `old_size` is a prefix of `new_size`.

    RFC 9162 section 2.1.4.2. Equal sizes need an empty proof and equal roots; the
    empty tree's root must be SHA-256() (the C2SP witness rule) and has no proof to
    any larger tree (it is consistent with every tree, so there is nothing to check
    and a caller that asks is confused: handle size 0 before calling)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    for p in proof:
        _check_hash(p, "consistency proof hash")
    if old_size == new_size:
        if proof:
            raise ProofError("equal tree sizes need an empty consistency proof")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the root of the empty tree must be SHA-256 of the empty string")
        if old_root != new_root:
            raise ProofError(f"different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        raise ProofError("there is no consistency proof from the empty tree")
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    # Step 2: when old_size is a power of two the old root is itself on the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
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
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the root of size {new_size}")


class CompactRange:
    """The right frontier of a tree of `size` leaves: one hash per set bit of `size`.

    `hashes[i]` is the root of a perfect subtree; from left to right they cover
    [0, size) in decreasing powers of two. Appending a leaf merges equal-sized
    subtrees (a binary counter), so a log keeps O(log n) hashes to integrate new
    entries and compute the new root without reading old leaves. The state is the
    pair (size, hashes): `to_json`/`from_json` round-trip it, refusing any state
    whose hash count does not match the size.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ProofError(f"tree size {size} is out of range")
        if len(hashes) != size.bit_count():
            raise ProofError(
                f"a compact range of size {size} holds {size.bit_count()} hashes, not {len(hashes)}"
            )
        for h in hashes:
            _check_hash(h, "compact range hash")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at index `size`."""
        _check_hash(leaf, "leaf hash")
        if self._size >= MAX_TREE_SIZE:
            raise ProofError("the tree is full")
        h, s = leaf, self._size
        while s & 1:
            h = node_hash(self._hashes.pop(), h)
            s >>= 1
        self._hashes.append(h)
        self._size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH of the leaves so far (RFC 9162 merges the frontier right to left)."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self._size,
            "hashes": [base64.b64encode(h).decode() for h in self._hashes],
        }

    @classmethod
    def from_json(cls, value: Any) -> CompactRange:
        if not isinstance(value, dict) or set(value) != {"size", "hashes"}:
            raise ProofError("a compact range is {'size': int, 'hashes': [base64, ...]}")
        size, hashes = value["size"], value["hashes"]
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(hashes, list):
            raise ProofError("a compact range is {'size': int, 'hashes': [base64, ...]}")
        return cls(size, [decode_hash(h) for h in hashes])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash((self._size, tuple(self._hashes)))

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


def decode_hash(text: Any) -> bytes:
    """A base64 (RFC 4648 section 4, padded) SHA-256 hash, strictly."""
    if not isinstance(text, str):
        raise ProofError("a hash is a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProofError(f"not a base64 hash: {text!r}") from exc
    # validate=True still accepts some non-canonical encodings; round-trip to refuse them.
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode() != text:
        raise ProofError(f"not a base64 {HASH_SIZE}-byte hash: {text!r}")
    return raw


def encode_hash(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
