"""Creating and reading requests: idempotency, bad input, tenants, roles, audit rows."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kaireon.dsar.v1 import dsar_pb2
from kaireon_server.platform.db import Database
from tests.dsar.conftest import (
    audit_actions,
    create,
    download,
    export_of,
    wait_done,
    watch_states,
)
from tests.support.server import metadata


async def _count_requests(db: Database, tenant: str) -> int:
    async with db.transaction(tenant, readonly=True) as con:
        return int(
            await con.fetchval("SELECT count(*) FROM dsar_request WHERE tenant_id = $1", tenant)
        )


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def test_a_retried_create_with_the_same_key_returns_the_same_request(stub, tenant, db):
    first = await create(stub, tenant, "cust_1", key="retry-me")
    again = await create(stub, tenant, "cust_1", key="retry-me")
    assert again.id == first.id and again.idempotency_key == "retry-me"
    assert await _count_requests(db, tenant) == 1
    assert (await audit_actions(db, tenant, first.id)).count("dsar_request_created") == 1
    # Without a key every create is a new request.
    other = await create(stub, tenant, "cust_1")
    assert other.id != first.id
    # The same key for a different request is refused, and nothing is written.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(stub, tenant, "cust_2", key="retry-me")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
    assert await _count_requests(db, tenant) == 2


async def test_concurrent_creates_with_one_key_make_one_request(stub, tenant, db):
    import asyncio

    replies = await asyncio.gather(*(create(stub, tenant, "cust_1", key="k") for _ in range(8)))
    assert len({r.id for r in replies}) == 1
    assert await _count_requests(db, tenant) == 1


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        (
            {"request_type": "delete", "subject_id": "subject-pii-42"},
            "request_type",
            "UNKNOWN_REQUEST_TYPE",
        ),
        ({"request_type": "", "subject_id": "subject-pii-42"}, "request_type", "INVALID_FIELD"),
        ({"request_type": "export", "subject_id": ""}, "subject_id", "INVALID_FIELD"),
        ({"request_type": "export", "subject_id": "   "}, "subject_id", "INVALID_FIELD"),
        ({"request_type": "export", "subject_id": "x" * 257}, "subject_id", "FIELD_TOO_LONG"),
        ({"request_type": "export", "subject_id": "pii\nsubject"}, "subject_id", "INVALID_FIELD"),
        (
            {
                "request_type": "export",
                "subject_id": "subject-pii-42",
                "idempotency_key": "k" * 129,
            },
            "idempotency_key",
            "FIELD_TOO_LONG",
        ),
        (
            # A careless client's trailing newline: refused, not a second key.
            {"request_type": "export", "subject_id": "subject-pii-42", "idempotency_key": "k\n"},
            "idempotency_key",
            "INVALID_FIELD",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_and_writes_nothing(
    stub, tenant, db, fields, field, reason
):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateDsarRequest(
            dsar_pb2.CreateDsarRequestRequest(**fields), metadata=metadata(tenant, "operator")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(err.value) == reason
    assert err.value.details().startswith(field)
    # The message names the rule, never the (possibly personal) value.
    assert fields["subject_id"].strip() == "" or fields["subject_id"] not in err.value.details()
    assert await _count_requests(db, tenant) == 0


async def test_a_subject_id_of_256_characters_is_accepted(stub, tenant):
    request = await create(stub, tenant, "é" * 256)
    assert request.subject_id == "é" * 256


async def test_bad_status_filter_page_token_and_watch_version_are_invalid(stub, tenant):
    md = metadata(tenant, "operator")
    for request in (
        dsar_pb2.ListDsarRequestsRequest(status="done"),
        dsar_pb2.ListDsarRequestsRequest(page_token="not-a-token"),
        dsar_pb2.ListDsarRequestsRequest(page_size=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListDsarRequests(request, metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = await create(stub, tenant, "cust_1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await watch_states(stub, tenant, request.id, after_version=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_watch_resumed_past_the_last_version_ends_with_nothing(stub, seeded):
    """The largest version a client may send (int64 max, the watch's own "current
    state only" sentinel) on a finished request: no state, no error, no wait."""
    done, _ = await export_of(stub, seeded, "cust_00001")
    for after in (done.version, 2**63 - 1):
        assert await watch_states(stub, seeded, done.id, after_version=after, timeout=10) == []
    # Resumed just before its last version: that state alone.
    last = await watch_states(stub, seeded, done.id, after_version=done.version - 1, timeout=10)
    assert [(s.status, s.version) for s in last] == [("completed", done.version)]


async def test_unknown_ids_and_other_tenants_requests_are_not_found(stub, seeded, tenant):
    done, _ = await export_of(stub, seeded, "cust_00001")
    intruder = f"{tenant}z"
    for who, request_id in (
        (intruder, done.id),  # exists, but in another tenant
        (seeded, str(uuid.uuid4())),
        (seeded, "not-a-uuid"),
    ):
        md = metadata(who, "admin")
        calls = [
            stub.GetDsarRequest(dsar_pb2.GetDsarRequestRequest(id=request_id), metadata=md),
            watch_states(stub, who, request_id),
            download(stub, who, request_id),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert _reason(err.value) == "DSAR_REQUEST_NOT_FOUND"
    listing = await stub.ListDsarRequests(
        dsar_pb2.ListDsarRequestsRequest(), metadata=metadata(intruder, "admin")
    )
    assert list(listing.requests) == []


async def test_roles_viewers_are_refused_operators_and_admins_served(stub, seeded):
    done, _ = await export_of(stub, seeded, "cust_00001")
    for role, code in (("viewer", grpc.StatusCode.PERMISSION_DENIED), ("admin", None)):
        md = metadata(seeded, role)
        calls = [
            stub.CreateDsarRequest(
                dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id="c"),
                metadata=md,
            ),
            stub.GetDsarRequest(dsar_pb2.GetDsarRequestRequest(id=done.id), metadata=md),
            stub.ListDsarRequests(dsar_pb2.ListDsarRequestsRequest(), metadata=md),
            watch_states(stub, seeded, done.id)
            if role != "viewer"
            else _viewer_watch(stub, seeded, done.id),
            download(stub, seeded, done.id, role=role),
        ]
        for call in calls:
            if code is None:
                await call
            else:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == code


async def _viewer_watch(stub, tenant: str, request_id: str) -> None:
    async for _ in stub.WatchDsarRequest(
        dsar_pb2.WatchDsarRequestRequest(id=request_id), metadata=metadata(tenant, "viewer")
    ):
        pass


async def test_downloading_an_unfinished_export_is_a_failed_precondition(
    stub, tenant, no_session_workers
):
    request = await create(stub, tenant, "cust_1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await download(stub, tenant, request.id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(err.value) == "EXPORT_NOT_READY"


async def test_encryption_without_keys_is_refused_at_create(stub, tenant, db):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(stub, tenant, "cust_1", encrypt=True)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(err.value) == "ENCRYPTION_NOT_CONFIGURED"
    assert await _count_requests(db, tenant) == 0


async def test_audit_rows_for_created_completed_and_downloaded(stub, seeded, db):
    done, _ = await export_of(stub, seeded, "cust_00001")
    await stub.GetDsarRequest(
        dsar_pb2.GetDsarRequestRequest(id=done.id), metadata=metadata(seeded, "operator")
    )
    assert await audit_actions(db, seeded, done.id) == [
        "dsar_request_created",
        "dsar_export_completed",
        "dsar_export_downloaded",  # the stream
        "dsar_export_downloaded",  # attached inline to Get
    ]
    async with db.transaction(seeded, readonly=True) as con:
        rows = await con.fetch(
            "SELECT action, changes, personal, subject_id FROM audit_log "
            "WHERE tenant_id = $1 AND entity_id = $2 ORDER BY seq",
            seeded,
            done.id,
        )
    completed = rows[1]
    assert completed["changes"]["digestSha256"] == done.export_digest_sha256
    assert completed["changes"]["rows"] > 0
    assert [r["changes"].get("via") for r in rows[2:]] == ["download", "inline"]
    # The subject is recorded as personal data (redactable), never in `changes`.
    for row in rows:
        assert row["subject_id"] == "cust_00001"
        assert row["personal"] == {"subjectId": "cust_00001"}
        assert "cust_00001" not in str(row["changes"])
    final = await wait_done(stub, seeded, done.id)
    assert final.version == done.version  # reads change nothing
