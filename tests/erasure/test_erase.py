"""EraseCustomer end to end over gRPC against the real PostgreSQL: what goes, what stays."""

from __future__ import annotations

import grpc
import pytest

from kaireon.erasure.v1 import erasure_pb2
from kaireon_server.platform import data_map
from kaireon_server.platform.db import Database
from tests.erasure.support import (
    audit_events,
    chain_valid,
    counts_json,
    erase,
    error_reason,
    only,
    snapshot,
    without,
)

CUSTOMER = "cust_00002"

# data-map table -> deletedCounts key, for the tables erasure deletes from.
COUNT_KEY = {t.table: t.count_key for t in data_map.erasure_order()}


async def test_full_erasure_deletes_every_row_of_the_customer_and_nothing_else(
    stub, audit_stub, db: Database, seeded: str, other_tenant: str
):
    before = await snapshot(db, seeded)
    before_other = await snapshot(db, other_tenant)
    mine = only(before, CUSTOMER)

    reply = await erase(stub, seeded, CUSTOMER)

    after = await snapshot(db, seeded)
    # Every deleted table is empty for the customer; the kept ones are untouched.
    for table in COUNT_KEY:
        assert (table, CUSTOMER) not in after, table
    assert after[("consent_record", CUSTOMER)] == mine["consent_record"] == 2
    # Other customers of the tenant, and the same customer id in another tenant, untouched.
    assert without(after, CUSTOMER) == without(before, CUSTOMER)
    assert await snapshot(db, other_tenant) == before_other

    # Counts equal the rows that were there, per table and per key.
    counts = counts_json(reply)
    ds_rows = sum(n for table, n in mine.items() if table.startswith("ds_"))
    expected = {key: 0 for key in data_map.count_keys()}
    for table, key in COUNT_KEY.items():
        expected[key] += mine.get(table, 0)
    expected["dynamicSchemaRows"] = ds_rows
    assert counts == expected
    assert list(counts)[:9] == list(data_map.SEED_COUNT_KEYS)
    assert counts["interactionHistory"] == 5 and counts["delivery"] == 2
    assert counts["dynamicSchemaRows"] == 1  # the loyalty row
    assert counts["dsarExport"] == 2  # the stored export's chunks
    assert reply.total_deleted == sum(counts.values()) > 0
    assert reply.success and reply.customer_id == CUSTOMER and not reply.dry_run
    assert list(reply.skipped_tables) == [f"ds_{seeded}_web_sessions"]
    assert reply.HasField("receipt") and not reply.HasField("legal_hold")

    # Kept tables are listed with their legal basis.
    retained = {t.table: t for t in reply.retained_tables}
    assert retained["consent_record"].row_count == 2
    assert retained["consent_record"].retention == erasure_pb2.RETENTION_KEPT
    assert "Art. 17(3)" in retained["consent_record"].legal_basis
    assert retained["audit_log"].retention == erasure_pb2.RETENTION_REDACTED
    assert retained["dsar_request"].row_count == 1 == after[("dsar_request", CUSTOMER)]
    assert await chain_valid(audit_stub, seeded)


async def test_audit_row_records_the_erasure_with_the_counts(stub, audit_stub, seeded: str):
    reply = await erase(stub, seeded, CUSTOMER)
    events = await audit_events(audit_stub, seeded, "gdpr_erasure")
    assert len(events) == 1
    event = events[0]
    assert (event.entity_type, event.entity_id) == ("customer", CUSTOMER)
    assert not event.redacted
    assert {k: int(v) for k, v in event.changes.items()} == counts_json(reply)
    assert event.actor == "admin@headers"


async def test_erasing_an_erased_customer_succeeds_with_zeros(stub, audit_stub, seeded: str):
    first = await erase(stub, seeded, CUSTOMER)
    second = await erase(stub, seeded, CUSTOMER)
    assert first.total_deleted > 0
    assert second.success and second.total_deleted == 0
    assert set(counts_json(second).values()) == {0}
    # Each erasure is recorded; both records keep the customer id (proof of erasure).
    events = await audit_events(audit_stub, seeded, "gdpr_erasure")
    assert [e.entity_id for e in events] == [CUSTOMER, CUSTOMER]
    assert not any(e.redacted for e in events)
    assert await chain_valid(audit_stub, seeded)


async def test_unknown_customer_succeeds_with_zeros(stub, seeded: str):
    reply = await erase(stub, seeded, "cust_99999")
    assert reply.success and reply.total_deleted == 0


async def test_earlier_audit_rows_are_redacted_and_the_chain_still_verifies(
    stub, audit_stub, seeded: str
):
    other = "cust_00003"
    # Rows about the customer (hold set / released, a preview) and about another one.
    for customer in (CUSTOMER, other):
        await stub.SetLegalHold(
            erasure_pb2.SetLegalHoldRequest(customer_id=customer, reason="CASE-7"),
            metadata=_md(seeded),
        )
        await stub.ReleaseLegalHold(
            erasure_pb2.ReleaseLegalHoldRequest(customer_id=customer), metadata=_md(seeded)
        )
    await erase(stub, seeded, CUSTOMER, dry_run=True)

    reply = await erase(stub, seeded, CUSTOMER)

    events = await audit_events(audit_stub, seeded)
    about_hold = [e for e in events if e.action.startswith("legal_hold")]
    mine = [e for e in about_hold if e.redacted]
    theirs = [e for e in about_hold if not e.redacted]
    assert len(mine) == 2 and len(theirs) == 2
    # Redacted: no customer id, no reason; the digests that commit them remain.
    assert all(e.entity_id == "" and "reason" not in e.changes for e in mine)
    assert all(e.entity_id_digest and e.personal_digests for e in mine)
    assert all(e.entity_id == other and e.changes["reason"] == "CASE-7" for e in theirs)
    preview = [e for e in events if e.action == "gdpr_erasure_preview"]
    assert len(preview) == 1 and preview[0].redacted and preview[0].entity_id == ""
    erasure = [e for e in events if e.action == "gdpr_erasure"]
    assert erasure[0].entity_id == CUSTOMER and not erasure[0].redacted
    redacted = {t.table: t.row_count for t in reply.retained_tables}["audit_log"]
    assert redacted == 3
    assert await chain_valid(audit_stub, seeded)


async def test_dry_run_reports_the_real_counts_and_deletes_nothing(
    stub, audit_stub, db: Database, seeded: str
):
    before = await snapshot(db, seeded)
    preview = await erase(stub, seeded, CUSTOMER, dry_run=True)
    after = await snapshot(db, seeded)
    # Only the preview's own audit row is new.
    assert after - before == {("audit_log", CUSTOMER): 1}
    assert before - after == {}
    assert preview.dry_run and preview.success
    assert not preview.HasField("receipt")
    events = await audit_events(audit_stub, seeded, "gdpr_erasure_preview")
    assert len(events) == 1
    assert {k: int(v) for k, v in events[0].changes.items()} == counts_json(preview)
    assert await audit_events(audit_stub, seeded, "gdpr_erasure") == []

    real = await erase(stub, seeded, CUSTOMER)
    assert counts_json(real) == counts_json(preview)
    assert real.total_deleted == preview.total_deleted > 0
    assert list(real.skipped_tables) == list(preview.skipped_tables)
    kept = lambda r: [(t.table, t.legal_basis, t.retention) for t in r.retained_tables]  # noqa: E731
    assert kept(real) == kept(preview)
    bases = {t.table: t.legal_basis for t in preview.retained_tables}
    for entry in data_map.retained_tables():
        assert bases[entry.table] == entry.legal_basis


@pytest.mark.parametrize("role", ["viewer", "operator"])
async def test_non_admin_is_refused_and_nothing_changes(
    stub, audit_stub, db: Database, seeded: str, role: str
):
    before = await snapshot(db, seeded)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(stub, seeded, CUSTOMER, role=role)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(stub, seeded, CUSTOMER, role=role, dry_run=True)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await snapshot(db, seeded) == before
    assert [e.action for e in await audit_events(audit_stub, seeded)] == [
        "model_version_published",
        "model_version_published",
        "model_version_published",
        "model_version_published",
        "rules_published",
        "demo_seeded",
    ]


async def test_same_customer_in_another_tenant_is_not_touched(
    stub, db: Database, seeded: str, other_tenant: str
):
    before_other = await snapshot(db, other_tenant)
    await erase(stub, seeded, CUSTOMER)
    after_other = await snapshot(db, other_tenant)
    assert after_other == before_other
    assert only(after_other, CUSTOMER)["interaction_history"] == 5


async def test_error_reason_of_a_refusal_is_machine_readable(stub, seeded: str):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await erase(stub, seeded, CUSTOMER, role="operator")
    assert error_reason(caught.value) == "INSUFFICIENT_ROLE"


def _md(tenant: str) -> tuple[tuple[str, str], ...]:
    from tests.support.server import metadata

    return metadata(tenant)
