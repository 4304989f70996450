"""The export document: portable JSON by default, complete, counted, canonical, signed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from google.protobuf import json_format

from kaireon.dsar.v1 import dsar_pb2
from kaireon_client.signing import verify_signature
from kaireon_server.platform import data_map
from kaireon_server.platform.db import Database
from tests.dsar.conftest import (
    assert_canonical,
    create,
    export_of,
    wait_done,
)
from tests.support.server import metadata

SEED_KEYS = (
    "interactions",
    "summaries",
    "variantAssignments",
    "deliveries",
    "auditLogs",
    "consentRecords",
    "dsarRequests",
)
EXTRA_KEYS = (
    "decisionTraces",
    "suppressions",
    "attributionResults",
    "identityLinks",
    "journeyEnrollments",
    "dynamicSchemaRows",
)


def _rows(data: dict, key: str) -> int:
    value = data[key]
    return sum(len(v) for v in value.values()) if isinstance(value, dict) else len(value)


async def test_portable_json_is_the_default(stub, seeded, signing_key_path: Path):
    done, document = await export_of(stub, seeded, "cust_00001")
    value = assert_canonical(document)
    assert value["encrypted"] is False
    assert value["customerId"] == "cust_00001"
    assert value["requestId"] == done.id
    assert set(value) == {"counts", "customerId", "data", "encrypted", "exportedAt", "requestId"}
    # Every seed key, and every other table the data map exports.
    assert set(SEED_KEYS) | set(EXTRA_KEYS) <= set(value["data"])
    exported = {e.export_key for e in data_map.TABLES if e.export_key}
    assert exported | {"dynamicSchemaRows"} == set(value["data"])
    # The row values are the subject's own (the seed gives each customer an email).
    assert value["data"]["identityLinks"][0]["identifierValue"].endswith("1@example.com")
    assert value["data"]["dynamicSchemaRows"]["loyalty"][0]["tier"] in {"bronze", "silver", "gold"}
    # A verifiable package: digest of these bytes, ECDSA signature by the service key.
    assert done.export_digest_sha256 == hashlib.sha256(document).hexdigest()
    assert done.export_size_bytes == len(document)
    public = signing_key_path.with_name("cosign-test.pub").read_text()
    assert verify_signature(document, done.export_signature, public)
    assert not verify_signature(document + b" ", done.export_signature, public)


async def test_consent_records_are_always_included(stub, seeded):
    _, document = await export_of(stub, seeded, "cust_00002")
    consent = json.loads(document)["data"]["consentRecords"]
    assert sorted(r["purpose"] for r in consent) == ["marketing", "profiling"]
    assert all(set(r) >= {"granted", "source", "recordedAt"} for r in consent)


async def test_counts_equal_the_rows_in_data(stub, seeded):
    _, document = await export_of(stub, seeded, "cust_00003")
    value = json.loads(document)
    assert set(value["counts"]) == set(value["data"])
    for key in value["data"]:
        assert value["counts"][key] == _rows(value["data"], key), key
    assert value["counts"]["interactions"] == 5
    assert value["counts"]["consentRecords"] == 2


async def test_a_subject_with_no_data_completes_with_empty_data_and_zero_counts(stub, tenant):
    done, document = await export_of(stub, tenant, "nobody-here")
    value = assert_canonical(document)
    assert done.progress == 100
    assert set(value["counts"].values()) == {0}
    for key, rows in value["data"].items():
        assert rows == ({} if key == "dynamicSchemaRows" else []), key


async def test_the_subject_is_exported_from_one_tenant_only(stub, seeded, tenant, db: Database):
    from kaireon_server.demo.seed import SeedSize, seed_tenant

    other = f"{tenant}x"
    await seed_tenant(db, other, SeedSize(customers=1, interactions_per_customer=40))
    _, document = await export_of(stub, seeded, "cust_00001")
    assert json.loads(document)["counts"]["interactions"] == 5  # not 45


async def test_earlier_requests_are_exported_as_dsar_requests(stub, seeded):
    first, _ = await export_of(stub, seeded, "cust_00001")
    _, document = await export_of(stub, seeded, "cust_00001")
    previous = json.loads(document)["data"]["dsarRequests"]
    assert [r["id"] for r in previous] == [first.id]
    assert previous[0]["status"] == "completed"
    assert previous[0]["exportDigest"] == first.export_digest_sha256
    # Queue internals are not the subject's data.
    assert not {"leaseOwner", "attempts", "idempotencyKey"} & set(previous[0])


async def test_get_and_list_attach_the_export_with_integer_counts(stub, seeded):
    done, document = await export_of(stub, seeded, "cust_00001")
    pending = await create(stub, seeded, "cust_00002")  # may or may not be done yet
    reply = await stub.GetDsarRequest(
        dsar_pb2.GetDsarRequestRequest(id=done.id), metadata=metadata(seeded, "operator")
    )
    attached = reply.request.exported_data
    assert attached.customer_id == "cust_00001" and attached.encrypted is False
    assert dict(attached.counts) == json.loads(document)["counts"]
    assert reply.request.export_url == f"/api/v1/dsar/{done.id}/export"
    # JSON numbers, as the seed contract shows them (a Struct would say 5.0).
    rendered = json_format.MessageToDict(reply.request)
    assert rendered["exportedData"]["counts"]["interactions"] == 5
    assert type(rendered["exportedData"]["counts"]["interactions"]) is int
    assert json_format.MessageToDict(attached.data) == json.loads(document)["data"]

    await wait_done(stub, seeded, pending.id)
    listing = await stub.ListDsarRequests(
        dsar_pb2.ListDsarRequestsRequest(status="completed"), metadata=metadata(seeded, "operator")
    )
    assert [r.id for r in listing.requests] == [pending.id, done.id]  # newest first
    assert all(r.status == "completed" and r.HasField("exported_data") for r in listing.requests)


async def test_list_filters_by_status_and_pages(stub, seeded, no_session_workers):
    ids = [(await create(stub, seeded, f"subject-{i}")).id for i in range(5)]
    md = metadata(seeded, "operator")
    page1 = await stub.ListDsarRequests(
        dsar_pb2.ListDsarRequestsRequest(status="pending", page_size=3), metadata=md
    )
    page2 = await stub.ListDsarRequests(
        dsar_pb2.ListDsarRequestsRequest(
            status="pending", page_size=3, page_token=page1.next_page_token
        ),
        metadata=md,
    )
    assert [r.id for r in page1.requests] + [r.id for r in page2.requests] == ids[::-1]
    assert page2.next_page_token == ""
    completed = await stub.ListDsarRequests(
        dsar_pb2.ListDsarRequestsRequest(status="completed"), metadata=md
    )
    assert list(completed.requests) == []
    by_subject = await stub.ListDsarRequests(
        dsar_pb2.ListDsarRequestsRequest(subject_id="subject-3"), metadata=md
    )
    assert [r.id for r in by_subject.requests] == [ids[3]]


async def test_exports_above_the_inline_limit_are_linked(seeded, server_with_env, db):
    from kaireon.dsar.v1 import dsar_pb2_grpc
    from tests.support.server import wait_for_channel

    app = await server_with_env(KAIREON_DSAR_INLINE_LIMIT_BYTES="1000")
    channel = await wait_for_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        stub = dsar_pb2_grpc.DsarServiceStub(channel)
        done, document = await export_of(stub, seeded, "cust_00001")
        assert len(document) > 1000
        reply = await stub.GetDsarRequest(
            dsar_pb2.GetDsarRequestRequest(id=done.id), metadata=metadata(seeded, "operator")
        )
        assert not reply.request.HasField("exported_data")
        assert reply.request.export_url == f"/api/v1/dsar/{done.id}/export"
        assert reply.request.export_size_bytes == len(document)
    finally:
        await channel.close()
