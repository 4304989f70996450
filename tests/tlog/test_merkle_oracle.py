"""Our Merkle trees against an independent implementation (pymerkle, RFC 9162 hashing).

pymerkle hashes leaves as SHA-256(0x00 || data) and nodes as SHA-256(0x01 || l || r)
(its default "security" mode), so its roots must equal ours for every tree; its
inclusion path (after its leading base leaf) must equal our RFC 9162 audit path.
Its consistency path has its own layout, so there we check that our proof
verifies between its roots.
"""

from __future__ import annotations

import hashlib
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from kaireon_client.tlog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    LeafHashes,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

entries = st.lists(st.binary(max_size=24), min_size=1, max_size=70)


def _tree(data: list[bytes]) -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")
    for item in data:
        tree.append_entry(item)
    return tree


def test_hashing_is_rfc9162() -> None:
    assert root_hash([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    # RFC 6962 / CT test data: the leaf hash of the empty entry and of a two-leaf tree.
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    a, b = leaf_hash(b"\x00"), leaf_hash(b"\x10")
    assert root_hash([a, b]) == hashlib.sha256(b"\x01" + a + b).digest() == node_hash(a, b)


def test_the_ct_reference_tree_of_eight_leaves() -> None:
    # The eight inputs and roots of the CT test suite (merkle_tree_test.cc, RFC 6962).
    inputs = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    hashes = [leaf_hash(i) for i in inputs]
    for n in range(1, 9):
        assert root_hash(hashes[:n]).hex() == roots[n - 1]


@settings(max_examples=60, deadline=None)
@given(entries)
def test_roots_and_inclusion_paths_match_pymerkle(data: list[bytes]) -> None:
    tree = _tree(data)
    hashes = [leaf_hash(d) for d in data]
    source = LeafHashes(hashes)
    for size in range(1, len(data) + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            theirs = tree.get_root(size)
        assert root_hash(hashes[:size]) == theirs
        for index in {0, size // 2, size - 1}:
            ours = inclusion_proof(source, index, size)
            their_path = tree.prove_inclusion(index + 1, size).path
            assert ours == their_path[1:]
            verify_inclusion(hashes[index], index, size, ours, theirs)


@settings(max_examples=60, deadline=None)
@given(entries, st.data())
def test_consistency_proofs_verify_between_pymerkle_roots(
    data: list[bytes], draw: st.DataObject
) -> None:
    tree = _tree(data)
    hashes = [leaf_hash(d) for d in data]
    new = draw.draw(st.integers(1, len(data)))
    old = draw.draw(st.integers(1, new))
    old_root, new_root = tree.get_root(old), tree.get_root(new)
    proof = consistency_proof(hashes, old, new)
    verify_consistency(old, new, proof, old_root, new_root)
    # RFC 9162 proofs are at most ceil(log2(new)) + 1 hashes.
    assert len(proof) <= new.bit_length() + 1
    if old < new:
        with pytest.raises(ProofError):
            verify_consistency(old, new, proof, old_root, hashlib.sha256(new_root).digest())
        with pytest.raises(ProofError):
            verify_consistency(old, new, proof[:-1], old_root, new_root)


@settings(max_examples=60, deadline=None)
@given(entries, st.integers(0, 69))
def test_compact_range_matches_full_roots_and_round_trips(data: list[bytes], cut: int) -> None:
    hashes = [leaf_hash(d) for d in data]
    cut = min(cut, len(hashes))
    frontier = CompactRange()
    frontier.extend(hashes[:cut])
    # Persist and restore mid-way, as a log does between batches.
    restored = CompactRange.from_json(frontier.to_json())
    assert restored == frontier
    assert len(restored.hashes) == bin(cut).count("1")
    restored.extend(hashes[cut:])
    assert restored.size == len(hashes)
    assert restored.root() == root_hash(hashes) == _tree(data).get_root()


def test_compact_range_refuses_inconsistent_state() -> None:
    with pytest.raises(ProofError, match="holds 2 hashes"):
        CompactRange(3, [leaf_hash(b"x")])
    with pytest.raises(ProofError):
        CompactRange.from_json({"size": 1, "hashes": ["not base64!"]})
    with pytest.raises(ProofError):
        CompactRange.from_json({"size": 1, "hashes": [], "extra": 1})
    with pytest.raises(ProofError):
        CompactRange(1, [b"short"])


def test_generation_refuses_impossible_requests() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(5)]
    with pytest.raises(ProofError):
        inclusion_proof(hashes, 5, 5)
    with pytest.raises(ProofError):
        consistency_proof(hashes, 0, 5)
    with pytest.raises(ProofError):
        consistency_proof(hashes, 4, 6)
    assert consistency_proof(hashes, 5, 5) == []
    with pytest.raises(ProofError, match="outside"):
        root_from_inclusion_proof(hashes[0], 3, 3, [])
