"""C2SP tlog-tiles (c2sp.org/tlog-tiles): the static read side of a log.

A tile at level L holds up to 256 consecutive hashes, each the Merkle tree hash of
a full level-(L-1) tile (level 0: leaf hashes); the rightmost tiles of a tree are
partial (`.p/<W>`). Entry bundles are big-endian uint16 length-prefixed entries.

This module gives what both sides need: the resource paths, which tiles a tree
of a given size has, how a log builds tile contents from leaf hashes, the entry
bundle encoding, and `TileNodeSource`, which answers the subtree hashes of proof
generation (merkle.NodeSource) from tiles, so a client can compute any inclusion
or consistency proof from fetched tiles, and a server from stored ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kaireon_client.tlog.merkle import HASH_SIZE, LeafHashes, ProofError, node_hash

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileNodeSource",
    "TileRef",
    "entries_path",
    "format_entry_bundle",
    "parse_entry_bundle",
    "parse_tile_path",
    "tile_hashes",
    "tile_path",
    "tiles_for_size",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_BYTES = 0xFFFF
_TILE_PATH = re.compile(
    r"tile/(?:(0|[1-9][0-9]?)|(entries))/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)


@dataclass(frozen=True, slots=True, order=True)
class TileRef:
    """A tile (level >= 0) or an entry bundle (level -1): index and width (256 = full)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def path(self) -> str:
        width = None if self.width == TILE_WIDTH else self.width
        if self.level < 0:
            return entries_path(self.index, width)
        return tile_path(self.level, self.index, width)


def _encode_index(n: int) -> str:
    if n < 0:
        raise ValueError("a tile index is non-negative")
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def _suffix(width: int | None) -> str:
    if width is None:
        return ""
    if not 1 <= width < TILE_WIDTH:
        raise ValueError(f"a partial tile is 1 to 255 wide, not {width}")
    return f".p/{width}"


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """`tile/<L>/<N>[.p/<W>]`, e.g. tile_path(0, 1234067) == "tile/0/x001/x234/067"."""
    if not 0 <= level <= 63:
        raise ValueError("a tile level is 0 to 63")
    return f"tile/{level}/{_encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int | None = None) -> str:
    """`tile/entries/<N>[.p/<W>]`."""
    return f"tile/entries/{_encode_index(index)}{_suffix(width)}"


def parse_tile_path(path: str) -> TileRef:
    """The inverse of `tile_path` / `entries_path`, strictly (level -1 for entries)."""
    match = _TILE_PATH.fullmatch(path)
    if match is None:
        raise ValueError(f"not a tile path: {path!r}")
    level_text, entries, index_text, width_text = match.groups()
    level = -1 if entries else int(level_text)
    width = int(width_text) if width_text else TILE_WIDTH
    if level > 63 or (width_text and width >= TILE_WIDTH):
        raise ValueError(f"not a tile path: {path!r}")
    index = int(index_text.replace("x", "").replace("/", ""))
    ref = TileRef(level, index, width)
    if ref.path() != path:  # e.g. x000/001: one index, one path
        raise ValueError(f"not the canonical tile path: {path!r}")
    return ref


def tiles_for_size(size: int) -> list[TileRef]:
    """Every tile a tree of `size` leaves is served as (full ones, then each level's partial)."""
    tiles: list[TileRef] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        hashes = size >> (TILE_HEIGHT * level)  # hashes at this level
        full, partial = divmod(hashes, TILE_WIDTH)
        tiles.extend(TileRef(level, n) for n in range(full))
        if partial:
            tiles.append(TileRef(level, full, partial))
        level += 1
    return tiles


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def tile_hashes(leaf_hashes: Sequence[bytes], ref: TileRef) -> bytes:
    """A tile's bytes, from the tree's leaf hashes (what a log stores or serves)."""
    span = 1 << (TILE_HEIGHT * ref.level)  # leaves under one hash of this tile
    start = ref.index * TILE_WIDTH
    if (start + ref.width) * span > len(leaf_hashes):
        raise ProofError(f"{ref.path()} is beyond a tree of {len(leaf_hashes)} leaves")
    source = LeafHashes(leaf_hashes)
    return b"".join(
        source.range_hash((start + i) * span, (start + i + 1) * span) for i in range(ref.width)
    )


@dataclass
class TileNodeSource:
    """merkle.NodeSource over tiles: `fetch(TileRef) -> bytes` returns a tile's bytes.

    Only tiles that a tree of `size` serves are asked for (full, or the partial
    one of this size), each at most once; a tile of the wrong length is refused."""

    size: int
    fetch: Callable[[TileRef], bytes]
    _tiles: dict[TileRef, bytes] = field(default_factory=dict, repr=False)

    def _tile(self, level: int, index: int) -> bytes:
        hashes_at_level = self.size >> (TILE_HEIGHT * level)
        full = hashes_at_level // TILE_WIDTH
        width = TILE_WIDTH if index < full else hashes_at_level % TILE_WIDTH
        if index > full or width == 0:
            raise ProofError(f"tile {level}/{index} does not exist at size {self.size}")
        ref = TileRef(level, index, width)
        data = self._tiles.get(ref)
        if data is None:
            data = self.fetch(ref)
            if len(data) != width * HASH_SIZE:
                raise ProofError(f"{ref.path()} is {len(data)} bytes, not {width * HASH_SIZE}")
            self._tiles[ref] = data
        return data

    def _perfect(self, height: int, k: int) -> bytes:
        """The hash of the perfect subtree of 2**height leaves starting at k * 2**height."""
        level, rest = divmod(height, TILE_HEIGHT)
        first = k << rest  # position among the hashes of `level`
        count = 1 << rest
        tile = self._tile(level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        hashes = [
            tile[(offset + i) * HASH_SIZE : (offset + i + 1) * HASH_SIZE] for i in range(count)
        ]
        return _perfect_root(hashes)

    def range_hash(self, start: int, end: int) -> bytes:
        if not 0 <= start < end <= self.size:
            raise ProofError(f"leaf range [{start}, {end}) is outside the tree")
        # MTH(D[start:end]) for an RFC 9162 range: split off perfect subtrees left to right.
        roots: list[bytes] = []
        pos = start
        while pos < end:
            height = (end - pos).bit_length() - 1
            while pos % (1 << height):
                height -= 1
            roots.append(self._perfect(height, pos >> height))
            pos += 1 << height
        r = roots[-1]
        for h in reversed(roots[:-1]):
            r = node_hash(h, r)
        return r


def format_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Big-endian uint16 length-prefixed entries (at most 256)."""
    if len(entries) > TILE_WIDTH:
        raise ValueError("an entry bundle holds at most 256 entries")
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit an entry bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("truncated entry length")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise ValueError("truncated entry")
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if len(entries) > TILE_WIDTH:
        raise ValueError("an entry bundle holds at most 256 entries")
    return entries
