"""C2SP tlog-tiles: paths and the tile set of a size as the specification's examples give
them; proofs computed from tiles equal proofs computed from all the leaves."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaireon_client.tlog.merkle import (
    LeafHashes,
    ProofError,
    consistency_proof,
    inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from kaireon_client.tlog.tiles import (
    TileNodeSource,
    TileRef,
    entries_path,
    format_entry_bundle,
    parse_entry_bundle,
    parse_tile_path,
    tile_hashes,
    tile_path,
    tiles_for_size,
)


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def test_paths_as_in_the_spec() -> None:
    # tlog-tiles.md, "Merkle Tree": index 1234067 is x001/x234/067.
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(2, 0, 1) == "tile/2/000.p/1"
    assert entries_path(1000, 17) == "tile/entries/x001/000.p/17"
    for ref in [TileRef(0, 1234067), TileRef(2, 0, 1), TileRef(-1, 1000, 17), TileRef(63, 5)]:
        assert parse_tile_path(ref.path()) == ref
    for bad in [
        "tile/0/1234067",
        "tile/00/000",
        "tile/64/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/001/002",
        "tile/0/x001",
        "tile/0/x000/001",
        "/tile/0/000",
    ]:
        with pytest.raises(ValueError):
            parse_tile_path(bad)


def test_the_tiles_of_a_tree_as_in_the_spec() -> None:
    # tlog-tiles.md, "Partial Tiles": size 70,000 is 273 full level-0 tiles, one
    # partial of width 112, one full level-1 tile, a partial of 17, a partial level-2 of 1.
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t.level == 0]
    assert len([t for t in level0 if t.width == 256]) == 273
    assert [t for t in level0 if t.width != 256] == [TileRef(0, 273, 112)]
    assert [t for t in tiles if t.level == 1] == [TileRef(1, 0), TileRef(1, 1, 17)]
    assert [t for t in tiles if t.level == 2] == [TileRef(2, 0, 1)]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial
    # level 1 tile of width 1".
    assert tiles_for_size(256) == [TileRef(0, 0), TileRef(1, 0, 1)]
    assert tiles_for_size(0) == []


def test_proofs_from_tiles_equal_proofs_from_leaves_in_a_big_tree() -> None:
    size = 70_000
    leaves = _leaves(size)
    stored = {ref: tile_hashes(leaves, ref) for ref in tiles_for_size(size)}
    fetched: list[TileRef] = []

    def fetch(ref: TileRef) -> bytes:
        fetched.append(ref)
        return stored[ref]

    tiles = TileNodeSource(size, fetch)
    full = LeafHashes(leaves)
    root = root_hash(leaves)
    assert tiles.range_hash(0, size) == root
    for index in (0, 255, 256, 65_535, 65_536, 69_999):
        proof = inclusion_proof(tiles, index, size)
        assert proof == inclusion_proof(full, index, size)
        verify_inclusion(leaves[index], index, size, proof, root)
    for old in (1, 256, 1000, 65_536, 69_999):
        proof = consistency_proof(tiles, old, size)
        assert proof == consistency_proof(full, old, size)
        verify_consistency(old, size, proof, root_hash(leaves[:old]), root)
    # A client fetches a handful of tiles, never the whole log, and each once.
    assert len(fetched) == len(set(fetched)) < 40


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 1300), st.data())
def test_proofs_from_tiles_at_any_size(size: int, data: st.DataObject) -> None:
    leaves = _leaves(size)
    stored = {ref: tile_hashes(leaves, ref) for ref in tiles_for_size(size)}
    tiles = TileNodeSource(size, stored.__getitem__)
    index = data.draw(st.integers(0, size - 1))
    assert inclusion_proof(tiles, index, size) == inclusion_proof(leaves, index, size)
    old = data.draw(st.integers(1, size))
    assert consistency_proof(tiles, old, size) == consistency_proof(leaves, old, size)


def test_a_tile_of_the_wrong_length_is_refused() -> None:
    leaves = _leaves(300)
    tiles = TileNodeSource(300, lambda ref: tile_hashes(leaves, ref)[:-1])
    with pytest.raises(ProofError, match="bytes, not"):
        tiles.range_hash(0, 300)
    with pytest.raises(ProofError, match="beyond"):
        tile_hashes(leaves, TileRef(0, 1))


def test_entry_bundles_round_trip_and_refuse_truncation() -> None:
    entries = [b"", b"a", b"x" * 65535]
    bundle = format_entry_bundle(entries)
    assert bundle[:3] == b"\x00\x00\x00"
    assert parse_entry_bundle(bundle) == entries
    with pytest.raises(ValueError):
        parse_entry_bundle(bundle[:-1])
    with pytest.raises(ValueError):
        format_entry_bundle([b"x" * 65536])
