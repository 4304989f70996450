"""Legal holds: set, list, release through the API; audited; they block erasure."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from kaireon.erasure.v1 import erasure_pb2
from kaireon_server.platform.db import Database
from tests.erasure.support import (
    audit_events,
    chain_valid,
    erase,
    error_reason,
    row_locked,
    snapshot,
    waiting_backend,
)
from tests.support.server import metadata

CUSTOMER = "cust_00001"
REASON = "CASE-2026-0042 (litigation)"


async def _set(stub, tenant: str, customer: str = CUSTOMER, reason: str = REASON):
    return await stub.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id=customer, reason=reason),
        metadata=metadata(tenant),
    )


async def _release(stub, tenant: str, customer: str = CUSTOMER):
    return await stub.ReleaseLegalHold(
        erasure_pb2.ReleaseLegalHoldRequest(customer_id=customer), metadata=metadata(tenant)
    )


async def test_a_hold_blocks_erasure_and_the_dry_run_reports_it(
    stub, audit_stub, db: Database, seeded: str
):
    placed = await _set(stub, seeded)
    assert placed.legal_hold.customer_id == CUSTOMER
    assert placed.legal_hold.reason == REASON
    assert placed.legal_hold.created_by == "admin@headers"
    assert placed.legal_hold.create_time.seconds > 0
    before = await snapshot(db, seeded)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(stub, seeded, CUSTOMER)
    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "LEGAL_HOLD"
    assert REASON in error.details() and CUSTOMER not in error.details()
    assert await snapshot(db, seeded) == before
    assert await audit_events(audit_stub, seeded, "gdpr_erasure") == []

    preview = await erase(stub, seeded, CUSTOMER, dry_run=True)
    assert preview.HasField("legal_hold")
    assert preview.legal_hold == placed.legal_hold
    assert preview.total_deleted > 0
    kept = {t.table: t.row_count for t in preview.retained_tables}
    assert kept["legal_hold"] == 1

    # Other customers are not held.
    other = await erase(stub, seeded, "cust_00002")
    assert other.total_deleted > 0

    released = await _release(stub, seeded)
    assert released.legal_hold == placed.legal_hold
    reply = await erase(stub, seeded, CUSTOMER)
    assert reply.total_deleted == preview.total_deleted
    assert await chain_valid(audit_stub, seeded)


async def test_hold_changes_are_audited(stub, audit_stub, seeded: str):
    await _set(stub, seeded)
    await _release(stub, seeded)
    events = await audit_events(audit_stub, seeded)
    set_, released = [e for e in events if e.action.startswith("legal_hold")]
    assert (set_.action, released.action) == ("legal_hold_set", "legal_hold_released")
    for event in (set_, released):
        assert (event.entity_type, event.entity_id) == ("customer", CUSTOMER)
        assert event.changes["reason"] == REASON
        # Personal values are committed through digests, so erasure can redact them.
        assert event.entity_id_digest and set(event.personal_digests) == {"reason"}
    assert await chain_valid(audit_stub, seeded)


async def test_hold_conflicts_and_missing_holds(stub, tenant: str):
    await _set(stub, tenant)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set(stub, tenant, reason="CASE-2")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(caught.value) == "LEGAL_HOLD_EXISTS"
    await _release(stub, tenant)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _release(stub, tenant)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "LEGAL_HOLD_NOT_FOUND"


async def test_holds_are_per_tenant(stub, seeded: str, other_tenant: str):
    await _set(stub, other_tenant)
    reply = await erase(stub, seeded, CUSTOMER)
    assert reply.total_deleted > 0
    listed = await stub.ListLegalHolds(
        erasure_pb2.ListLegalHoldsRequest(), metadata=metadata(seeded)
    )
    assert list(listed.legal_holds) == []


async def test_list_pages_through_the_holds_in_customer_order(stub, tenant: str):
    customers = [f"cust_{n:05d}" for n in (5, 1, 4, 2, 3)]
    for customer in customers:
        await _set(stub, tenant, customer, f"CASE-{customer}")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListLegalHolds(
            erasure_pb2.ListLegalHoldsRequest(page_size=2, page_token=token),
            metadata=metadata(tenant),
        )
        pages += 1
        seen += [h.customer_id for h in page.legal_holds]
        assert all(h.reason == f"CASE-{h.customer_id}" for h in page.legal_holds)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(customers) and pages == 3


@pytest.mark.parametrize(
    ("customer", "reason", "field"),
    [
        ("", REASON, "customer_id"),
        ("x" * 257, REASON, "customer_id"),
        (CUSTOMER, "", "reason"),
        (CUSTOMER, "   ", "reason"),
        (CUSTOMER, "r" * 501, "reason"),
        (CUSTOMER, "CASE\n1", "reason"),
    ],
)
async def test_bad_hold_input_is_rejected(stub, tenant: str, customer, reason, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _set(stub, tenant, customer, reason)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()
    listed = await stub.ListLegalHolds(
        erasure_pb2.ListLegalHoldsRequest(), metadata=metadata(tenant)
    )
    assert list(listed.legal_holds) == []


async def test_malformed_page_token_is_rejected(stub, tenant: str):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListLegalHolds(
            erasure_pb2.ListLegalHoldsRequest(page_token="%%%"), metadata=metadata(tenant)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("role", ["viewer", "operator"])
async def test_holds_are_admin_only(stub, tenant: str, role: str):
    calls = [
        stub.SetLegalHold(
            erasure_pb2.SetLegalHoldRequest(customer_id=CUSTOMER, reason=REASON),
            metadata=metadata(tenant, role),
        ),
        stub.ReleaseLegalHold(
            erasure_pb2.ReleaseLegalHoldRequest(customer_id=CUSTOMER),
            metadata=metadata(tenant, role),
        ),
        stub.ListLegalHolds(erasure_pb2.ListLegalHoldsRequest(), metadata=metadata(tenant, role)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_hold_set_during_an_erasure_waits_for_it(stub, db: Database, seeded: str):
    # The erasure holds the customer's lock from its hold check to its commit;
    # a hold placed meanwhile must wait, not slip in unseen.
    async with row_locked(db, seeded, "delivery", CUSTOMER) as holder:
        erasure = asyncio.ensure_future(erase(stub, seeded, CUSTOMER))
        await waiting_backend(holder, "delivery")
        hold = asyncio.ensure_future(_set(stub, seeded))
        await asyncio.sleep(0.5)
        assert not hold.done()
    reply = await erasure
    assert reply.total_deleted > 0
    placed = await hold
    assert placed.legal_hold.customer_id == CUSTOMER
    # From now on the customer is held.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(stub, seeded, CUSTOMER)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
