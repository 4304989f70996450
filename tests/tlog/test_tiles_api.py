"""The tlog-tiles read API on a real server: a client mirrors a tenant's log with
`kaireon_client.tlog.tiles` (over gRPC and over the REST prefix /api/v1/audit/log/),
recomputes the signed root and the server's inclusion proofs, and sees a row edited
in the database as an entry that no longer hashes to its tile."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
import pytest

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_client.tlog.checkpoint import open_checkpoint
from kaireon_client.tlog.leaf import AuditLeaf
from kaireon_client.tlog.merkle import HASH_SIZE, inclusion_proof, leaf_hash
from kaireon_client.tlog.tiles import (
    TILE_WIDTH,
    TileNodeSource,
    TileRef,
    entries_path,
    parse_entry_bundle,
    tile_path,
    tiles_for_size,
)
from kaireon_server.app import App
from kaireon_server.audit import tlog
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from tests.support.server import metadata
from tests.tlog import test_evidence_proofs as evidence
from tests.tlog.test_evidence_proofs import log_keys
from tests.tlog.test_server_log import Keys

# The signed server (no integrator of its own) of the evidence tests, one per module.
keys = evidence.keys
env_of = evidence.env_of
evidence_app = evidence.evidence_app
app_db = evidence.app_db
channel = evidence.channel
integrator = evidence.integrator

ROWS = 530  # two full level-0 tiles and a partial one; a partial level-1 tile
Fetch = Callable[[str], Awaitable[bytes]]


async def _append(db: Database, tenant: str, n: int) -> None:
    async with db.transaction(tenant) as con:
        for i in range(n):
            await append_audit(
                con,
                tenant,
                action="consent_changed",
                entity_type="customer",
                entity_id=f"cust_{i:05d}",
                actor="operator",
                changes={"i": i},
                entity_id_is_personal=True,
                subject_id=f"cust_{i:05d}",
            )


def grpc_fetch(channel: grpc.aio.Channel, tenant: str) -> Fetch:
    stub = audit_pb2_grpc.AuditServiceStub(channel)

    async def fetch(path: str) -> bytes:
        reply = await stub.GetLogResource(
            audit_pb2.GetLogResourceRequest(path=path), metadata=metadata(tenant)
        )
        return bytes(reply.body.data)

    return fetch


async def mirror(fetch: Fetch, keys: Keys, tenant: str) -> tuple[int, bytes, dict[TileRef, bytes]]:
    """Fetch the checkpoint and every tile and entry bundle of its tree; check the
    signature and that the tiles hash to the signed root."""
    note = (await fetch("checkpoint")).decode()
    cp = open_checkpoint(note, log_keys(keys, tenant)).checkpoint
    tiles = {ref: await fetch(ref.path()) for ref in tiles_for_size(cp.size)}
    source = TileNodeSource(cp.size, tiles.__getitem__)
    assert source.range_hash(0, cp.size) == cp.root_hash
    return cp.size, cp.root_hash, tiles


async def test_a_client_mirrors_the_log_from_tiles(
    channel: grpc.aio.Channel,
    app_db: Database,
    tenant: str,
    integrator: tlog.Integrator,
    keys: Keys,
    evidence_app: tuple[App, object],
) -> None:
    await _append(app_db, tenant, ROWS)
    await integrator.integrate(tenant)
    fetch = grpc_fetch(channel, tenant)
    size, _, tiles = await mirror(fetch, keys, tenant)
    assert size == ROWS
    assert {(r.level, r.width) for r in tiles} == {(0, 256), (0, 18), (1, 2)}

    # Every entry hashes to its level-0 tile hash; entries are audit leaves.
    leaf_hashes = b"".join(tiles[TileRef(0, n, w)] for n, w in ((0, 256), (1, 256), (2, 18)))
    for n, width in ((0, 256), (1, 256), (2, 18)):
        path = entries_path(n, None if width == TILE_WIDTH else width)
        entries = parse_entry_bundle(await fetch(path))
        assert len(entries) == width
        for i, entry in enumerate(entries):
            index = n * TILE_WIDTH + i
            assert leaf_hash(entry) == leaf_hashes[index * HASH_SIZE : (index + 1) * HASH_SIZE]
            assert AuditLeaf.from_json(json.loads(entry)).seq == index + 1

    # A proof computed from the tiles is the server's.
    source = TileNodeSource(size, tiles.__getitem__)
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    served = await stub.GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(index=300, tree_size=size), metadata=metadata(tenant)
    )
    assert inclusion_proof(source, 300, size) == list(served.hashes)

    # Over REST, under the tlog-tiles prefix, byte for byte the same.
    app = evidence_app[0]
    prefix = f"http://127.0.0.1:{app.http_port}/api/v1/audit/log/"
    headers = {"X-Tenant-Id": tenant, "X-User-Role": "admin"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def rest(path: str) -> bytes:
            async with http.get(prefix + path) as response:
                assert response.status == 200, (path, response.status, await response.text())
                return await response.read()

        rest_size, _, rest_tiles = await mirror(rest, keys, tenant)
        assert rest_size == size and rest_tiles == tiles
        async with http.get(prefix + "tile/0/003") as response:
            assert response.status == 404
        async with http.get(headers={"X-User-Role": "viewer"}, url=prefix + "checkpoint") as denied:
            assert denied.status == 403


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/000.p/19",  # wider than the tree's partial... of an empty log
        tile_path(0, 0),
        entries_path(0, 1),
        "tile/0/x000/000",  # not canonical
        "tile/entries",
        "../checkpoint",
        "checkpoint/extra",
    ],
)
async def test_what_is_not_a_resource_of_the_tree_is_not_found(
    channel: grpc.aio.Channel, tenant: str, path: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await grpc_fetch(channel, tenant)(path)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_edited_row_no_longer_matches_its_tile(
    channel: grpc.aio.Channel,
    app_db: Database,
    tenant: str,
    integrator: tlog.Integrator,
    keys: Keys,
) -> None:
    await _append(app_db, tenant, 20)
    await integrator.integrate(tenant)
    fetch = grpc_fetch(channel, tenant)
    _, _, tiles = await mirror(fetch, keys, tenant)
    async with app_db.owner_connection() as con:
        await con.execute(
            "UPDATE audit_log SET changes = '{\"i\": 999}'::jsonb WHERE tenant_id = $1 AND seq = 8",
            tenant,
        )
    entries = parse_entry_bundle(await fetch(entries_path(0, 20)))
    level0 = tiles[TileRef(0, 0, 20)]
    bad = [
        i
        for i, entry in enumerate(entries)
        if leaf_hash(entry) != level0[i * HASH_SIZE : (i + 1) * HASH_SIZE]
    ]
    assert bad == [7]
