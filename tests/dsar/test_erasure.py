"""DSAR exports and GDPR erasure (ErasureService) of the same subject."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from kaireon.dsar.v1 import dsar_pb2
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon_server.platform import data_map
from kaireon_server.platform.data_map import ErasureAction
from kaireon_server.platform.db import Database
from tests.dsar.conftest import (
    add_interactions,
    create,
    download,
    export_of,
    stored_attempts,
    wait_done,
    worker_env,
)
from tests.support.server import metadata

DELETED_KEYS = {
    e.export_key for e in data_map.TABLES if e.export_key and e.erasure is ErasureAction.DELETE
} | {data_map.DYNAMIC_SCHEMA_EXPORT_KEY}


def _personal_values(document: dict) -> set[str]:
    """Values only the subject's erased rows held: contact details, names, addresses."""
    data = document["data"]
    values = {r["identifierValue"] for r in data["identityLinks"]}
    values |= {r["destination"] for r in data["deliveries"]}
    for trace in data["decisionTraces"]:
        person = trace["attributes"]["customer"]
        values |= {person["name"], person["address"], person["phone"], person["email"]}
    assert len(values) >= 4
    return values


async def _erase(channel: grpc.aio.Channel, tenant: str, customer: str) -> None:
    stub = erasure_pb2_grpc.ErasureServiceStub(channel)
    reply = await stub.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id=customer), metadata=metadata(tenant, "admin")
    )
    assert reply.deleted_counts.interaction_history > 0


async def test_export_after_erasure_holds_no_personal_data(stub, channel, seeded, db: Database):
    before, before_bytes = await export_of(stub, seeded, "cust_00001")
    personal = _personal_values(json.loads(before_bytes))
    await _erase(channel, seeded, "cust_00001")

    # The stored export is gone with the rest; the request is kept as proof.
    assert await stored_attempts(db, seeded, before.id) == []
    reply = await stub.GetDsarRequest(
        dsar_pb2.GetDsarRequestRequest(id=before.id), metadata=metadata(seeded, "operator")
    )
    kept = reply.request
    assert (kept.status, kept.export_digest_sha256) == ("completed", before.export_digest_sha256)
    assert not kept.export_available and not kept.export_url
    assert not kept.HasField("exported_data")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await download(stub, seeded, before.id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    after, after_bytes = await export_of(stub, seeded, "cust_00001")
    document = json.loads(after_bytes)
    for key in DELETED_KEYS:
        assert document["counts"][key] == 0, key
        rows = document["data"][key]
        groups = list(rows.values()) if isinstance(rows, dict) else [rows]
        assert all(group == [] for group in groups), key
    for value in personal:
        assert value.encode() not in after_bytes, "an erased value is still exported"
    # What the law lets the controller keep is disclosed, not hidden.
    assert len(document["data"]["consentRecords"]) == 2
    assert [r["id"] for r in document["data"]["dsarRequests"]] == [before.id]
    assert after.export_available


async def test_an_erasure_during_an_export_also_erases_what_it_stores(
    stub, channel, seeded, db: Database, server_with_env, no_session_workers
):
    await add_interactions(db, seeded, "cust_00001", 2000)
    await server_with_env(
        **worker_env(KAIREON_DSAR_CHUNK_BYTES="4096", KAIREON_DSAR_THROTTLE_MS="30")
    )
    request = await create(stub, seeded, "cust_00001")
    async with asyncio.timeout(30):
        while True:
            state = (
                await stub.GetDsarRequest(
                    dsar_pb2.GetDsarRequestRequest(id=request.id),
                    metadata=metadata(seeded, "operator"),
                )
            ).request
            if state.status == "processing" and state.progress > 5:
                break
            await asyncio.sleep(0.05)
    # The erasure waits for the export's transaction, then deletes its chunks too.
    await _erase(channel, seeded, "cust_00001")
    done = await wait_done(stub, seeded, request.id)
    assert done.status == "completed"
    assert not done.export_available
    assert await stored_attempts(db, seeded, request.id) == []
