"""Bad customer ids are refused with INVALID_ARGUMENT, nothing changed, nothing audited."""

from __future__ import annotations

import grpc
import pytest

from kaireon_server.platform.db import Database
from tests.erasure.support import (
    audit_events,
    erase,
    error_reason,
    field_violations,
    snapshot,
)

SEED_ACTIONS = 6  # audit rows the demo seed writes


@pytest.mark.parametrize(
    "customer",
    [
        pytest.param("", id="empty"),
        pytest.param("c" * 257, id="too-long"),
        pytest.param("   ", id="blank"),
        pytest.param("cust\x00001", id="nul"),
        pytest.param("cust\n00001", id="newline"),
        pytest.param("cust_\u202e00001", id="bidi-override"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
async def test_bad_customer_id_is_invalid_argument(
    stub, audit_stub, db: Database, seeded: str, customer: str, dry_run: bool
):
    before = await snapshot(db, seeded)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(stub, seeded, customer, dry_run=dry_run)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "INVALID_FIELD"
    assert field_violations(error) == ["customer_id"]
    # The message names the field, never the value.
    assert error.details().startswith("customer_id: ")
    if customer.strip():
        assert customer not in error.details()
    assert await snapshot(db, seeded) == before
    assert len(await audit_events(audit_stub, seeded)) == SEED_ACTIONS


@pytest.mark.parametrize("customer", ["c" * 256, "é" * 256, "客户-42", "cust 00001", "'; DROP--"])
async def test_unusual_but_valid_ids_are_accepted(stub, seeded: str, customer: str):
    reply = await erase(stub, seeded, customer)
    assert reply.success and reply.customer_id == customer and reply.total_deleted == 0


async def test_ids_are_matched_exactly(stub, db: Database, seeded: str):
    before = await snapshot(db, seeded)
    for near_miss in ("CUST_00001", "cust_00001 ", "cust_0000%", "cust_0000_"):
        reply = await erase(stub, seeded, near_miss)
        assert reply.total_deleted == 0
    after = await snapshot(db, seeded)
    # The erasure's own records (its audit row, its lifecycle request) aside.
    records = {"audit_log", "subject_request"}
    assert {k: v for k, v in after.items() if k[0] not in records} == {
        k: v for k, v in before.items() if k[0] not in records
    }
