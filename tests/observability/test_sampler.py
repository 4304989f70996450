"""The database-sampled gauges: the audit checkpoint lag grows while no checkpoint
covers a row (whatever the integrators do), and falls once one does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.observability.metrics import MetricsSettings
from kaireon_server.platform.observability.sampler import sample_once

_TLOG_LOCK = "SELECT pg_advisory_lock(hashtextextended('kaireon.tlog:' || $1, 0))"
_TLOG_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('kaireon.tlog:' || $1, 0))"


def _lag() -> float:
    value = REGISTRY.get_sample_value("kaireon_audit_checkpoint_lag_seconds")
    assert value is not None
    return value


async def test_checkpoint_lag_is_the_age_of_the_oldest_row_no_checkpoint_covers(
    db: Database, tenant: str
):
    settings = MetricsSettings({})
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    # Hold the integrators off this tenant (the lock each takes per tenant).
    async with db.connection() as holder:
        await holder.execute(_TLOG_LOCK, tenant)
        try:
            async with db.transaction(tenant) as con:
                await append_audit(
                    con,
                    tenant,
                    action="lag_probe",
                    entity_type="probe",
                    entity_id="p1",
                    actor="test",
                    now=two_hours_ago,
                )
            await sample_once(db, settings)
            stalled = _lag()
        finally:
            await holder.execute(_TLOG_UNLOCK, tenant)
    assert stalled >= 7000, stalled  # the alert's threshold is an hour

    async def covered() -> bool:
        async with db.transaction(tenant) as con:
            size = await con.fetchval(
                "SELECT size FROM audit_tlog_state WHERE tenant_id = $1", tenant
            )
            rows = await con.fetchval("SELECT count(*) FROM audit_log WHERE tenant_id = $1", tenant)
        return size is not None and size >= rows

    def reports_this_row() -> bool:
        # The gauge is the age of the oldest uncovered row of any tenant: on a
        # shared database other tenants may keep rows no checkpoint will cover
        # (the tamper tests' rewritten logs), older or younger than this one.
        age = (datetime.now(UTC) - two_hours_ago).total_seconds()
        return abs(_lag() - age) < 60

    # Released: the server's integrator checkpoints the row and the gauge lets go of it.
    for _ in range(120):
        await sample_once(db, settings)
        if await covered() and not reports_this_row():
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"the lag stayed at {_lag()} s after the lock was released")


async def test_overdue_lifecycle_requests_are_counted_and_aged(db: Database, tenant: str):
    """A request whose clock runs past its due date counts (received three days
    late); one paused, one completed or one not yet due does not."""
    settings = MetricsSettings({})
    today = datetime.now(UTC).date()

    def overdue() -> tuple[float, float]:
        count = REGISTRY.get_sample_value("kaireon_requests_overdue")
        late = REGISTRY.get_sample_value("kaireon_requests_overdue_seconds")
        assert count is not None and late is not None
        return count, late

    await sample_once(db, settings)
    before, _ = overdue()
    insert = (
        "INSERT INTO subject_request (tenant_id, kind, subject_id, regulation, state, origin,"
        " received_at, due_date, paused_at, paused_from, created_by)"
        " VALUES ($1, 'access', 'cust_sampled', 'gdpr', $2, 'lifecycle', now(), $3, $4, $5, 't')"
    )
    async with db.transaction(tenant) as con:
        await con.execute(insert, tenant, "received", today - timedelta(days=3), None, None)
        await con.execute(insert, tenant, "in_progress", today + timedelta(days=1), None, None)
        await con.execute(insert, tenant, "completed", today - timedelta(days=9), None, None)
        await con.execute(
            insert, tenant, "paused", today - timedelta(days=9), datetime.now(UTC), "received"
        )
    await sample_once(db, settings)
    count, late = overdue()
    # Other tests' tenants share the database: this tenant adds exactly one.
    assert count == before + 1
    # Its due date ended two days ago (end of day, UTC), or another's earlier.
    assert late >= 2 * 86400 - 60
    async with db.transaction(tenant) as con:
        await con.execute(
            "UPDATE subject_request SET state = 'cancelled', paused_at = NULL, paused_from = NULL"
            " WHERE tenant_id = $1",
            tenant,
        )
    await sample_once(db, settings)
    assert overdue()[0] == before
