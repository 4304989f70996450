"""Round trips to PostgreSQL per CreateDsarRequest, counted on the wire (issue #22).

A TCP proxy between the pool and PostgreSQL counts what the client sends before
it waits for an answer. A create was a pooled transaction: BEGIN, the tenant
setting, the insert, a read back, the audit row, COMMIT and the pool's reset
(7), nine with the request's lifecycle row. Now it is one statement (migration
0239's kaireon_dsar_create_direct: the request and its lifecycle row, and the
audit row beside it, chained at its commit): 1. A retry with the same
idempotency key adds a read-only transaction reading the stored request (with
its export's availability); a key reused for another request writes nothing.

A small export's attempt on the worker was BEGIN, the erasure lock, the
snapshot settings, the catalogue, the read, the chunk, the completion and
COMMIT (8); the lock, the settings and the catalogue are now one statement: 6.
"""

from __future__ import annotations

import secrets
import uuid

import asyncpg
import pytest

from kaireon_server.dsar.jobs import JobDeps, run_export
from kaireon_server.dsar.model import Claim, DsarRecord
from kaireon_server.dsar.notify import Notifier
from kaireon_server.dsar.requests import DsarRequests
from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.dsar.store import DigestSigner
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.listener import Listener
from kaireon_server.platform.errors import AlreadyExists
from kaireon_server.requests.intake import direct_access
from tests.support.tcp_proxy import TcpProxy


async def _export(
    requests: DsarRequests,
    tenant: str,
    key: str = "",
    subject: str = "cust_00001",
) -> DsarRecord:
    """A CreateDsarRequest as the service makes it (with its lifecycle row)."""
    return await requests.create(
        tenant_id=tenant,
        actor="test",
        request_type="export",
        subject_id=subject,
        encrypt=False,
        idempotency_key=key,
        lifecycle=direct_access(),
    )


async def test_a_create_is_one_round_trip_and_its_audit_row_is_chained(
    counted_pool: tuple[Database, TcpProxy], database_url: str, tenant: str
) -> None:
    db, proxy = counted_pool
    # Never started: nothing here waits on a notification.
    notifier = Notifier(Listener(lambda: asyncpg.connect(database_url)))
    requests = DsarRequests(db, DsarSettings.from_env({}), notifier)

    async def create(key: str, subject: str = "cust_00001") -> tuple[int, object]:
        await proxy.quiet(0.05)
        before = proxy.round_trips
        try:
            record: object = await _export(requests, tenant, key, subject)
        except AlreadyExists as exc:
            record = exc
        await proxy.quiet(0.05)
        return proxy.round_trips - before, record

    await create("")  # warm: the statement prepared
    spent = [(await create(""))[0] for _ in range(3)]
    key = secrets.token_hex(8)
    first_spent, first = await create(key)
    again_spent, again = await create(key)
    reused_spent, reused = await create(key, subject="cust_00002")
    print(
        f"\nFIGURE DSAR create round trips: {spent}, with a key {first_spent}, "
        f"its retry {again_spent}, the key reused {reused_spent}"
    )
    assert spent == [1, 1, 1] and first_spent == 1
    # The retry names the same request (the test server's workers may have run it).
    assert again.id == first.id  # type: ignore[attr-defined]
    assert isinstance(reused, AlreadyExists) and reused.reason == "IDEMPOTENCY_KEY_REUSED"

    owner = await asyncpg.connect(database_url)
    try:
        rows = await owner.fetch(
            "SELECT entity_id FROM audit_log WHERE tenant_id = $1 "
            "AND action = 'dsar_request_created' ORDER BY seq",
            tenant,
        )
        requests_made = await owner.fetchval(
            "SELECT count(*) FROM dsar_request WHERE tenant_id = $1", tenant
        )
        pending = await owner.fetchval(
            "SELECT count(*) FROM audit_pending WHERE tenant_id = $1", tenant
        )
    finally:
        await owner.close()
    # One request and one chained row per create that made one; none for the retry
    # or the refused reuse.
    assert requests_made == len(rows) == 5 and pending == 0
    assert rows[-1]["entity_id"] == str(first.id)  # type: ignore[attr-defined]


async def test_a_small_export_attempt_is_six_round_trips(
    counted_pool: tuple[Database, TcpProxy],
    database_url: str,
    tenant: str,
    seeded: str,
    no_session_workers: None,
) -> None:
    """BEGIN; the erasure lock, the snapshot settings and the catalogue in one
    statement; the counts and rows in one; the chunk; the completion with its
    audit row; COMMIT. The writer is leased, so a warm attempt opens nothing."""
    db, proxy = counted_pool
    notifier = Notifier(Listener(lambda: asyncpg.connect(database_url)))
    settings = DsarSettings.from_env({})
    requests = DsarRequests(db, settings, notifier)
    deps = JobDeps(db, settings, DigestSigner(None, ""), None, owner="test-round-trips")
    owner = await asyncpg.connect(database_url)

    async def attempt() -> int:
        request = await _export(requests, seeded)
        # The claim's effect, made by hand: this request, this owner's lease.
        await owner.execute(
            "UPDATE dsar_request SET status = 'processing', attempts = 1, "
            "lease_owner = $3, lease_expires_at = now() + interval '5 minutes' "
            "WHERE tenant_id = $1 AND id = $2",
            seeded,
            request.id,
            deps.owner,
        )
        claim = Claim(seeded, request.id, "cust_00001", False, 1)
        await proxy.quiet(0.05)
        before = proxy.round_trips
        rows = await run_export(deps, claim, lambda _done, _total: None)
        await proxy.quiet(0.05)
        status = await owner.fetchval(
            "SELECT status FROM dsar_request WHERE tenant_id = $1 AND id = $2", seeded, request.id
        )
        assert rows > 0 and status == "completed"
        return proxy.round_trips - before

    try:
        await attempt()  # warm: the writer leased and its statements prepared
        spent = [await attempt() for _ in range(3)]
    finally:
        await owner.close()
    print(f"\nFIGURE DSAR small export attempt round trips: {spent}")
    assert spent == [6, 6, 6]


async def test_the_services_create_with_its_lifecycle_row_is_one_round_trip(
    counted_pool: tuple[Database, TcpProxy],
    database_url: str,
    tenant: str,
    no_session_workers: None,  # the rows stay in progress: no export completes them
) -> None:
    """CreateDsarRequest also records an in-progress request of the lifecycle
    (requests/intake.py), due by the tenant's policy: in the same one statement
    (migration 0239), where it was a pooled transaction of nine round trips."""
    db, proxy = counted_pool
    notifier = Notifier(Listener(lambda: asyncpg.connect(database_url)))
    requests = DsarRequests(db, DsarSettings.from_env({}), notifier)
    owner = await asyncpg.connect(database_url)
    # The tenant's own policy: 20 days, not GDPR's default month.
    await owner.execute(
        "INSERT INTO subject_request_policy (tenant_id, regulation, period_months, "
        "period_days, max_extension_months, max_extension_days, require_verification, "
        "updated_by) VALUES ($1, 'gdpr', 0, 20, 0, 40, true, 'test'), "
        "($2, 'gdpr', 0, 3, 0, 6, true, 'test')",
        tenant,
        f"{tenant}-other",  # another tenant's policy never applies here
    )

    async def create(key: str) -> tuple[int, uuid.UUID]:
        await proxy.quiet(0.05)
        before = proxy.round_trips
        record = await _export(requests, tenant, key)
        await proxy.quiet(0.05)
        return proxy.round_trips - before, record.id

    try:
        made = [(await create(""))[1]]  # warm: the statement prepared
        spent = []
        for _ in range(3):
            n, request_id = await create("")
            spent.append(n)
            made.append(request_id)
        key = secrets.token_hex(8)
        first_spent, first_id = await create(key)
        made.append(first_id)
        await create(key)  # the retry: the same request, no second lifecycle row
        # The key reused for another subject: refused, and no row of any kind.
        with pytest.raises(AlreadyExists):
            await _export(requests, tenant, key, subject="cust_00002")
        rows = await owner.fetch(
            "SELECT dsar_request_id, kind, origin, state, regulation, created_by, "
            "due_date - (received_at AT TIME ZONE 'UTC')::date AS days "
            "FROM subject_request WHERE tenant_id = $1 ORDER BY received_at",
            tenant,
        )
    finally:
        await owner.close()
    assert spent == [1, 1, 1] and first_spent == 1
    assert [r["dsar_request_id"] for r in rows] == made
    for r in rows:
        assert (r["kind"], r["origin"], r["state"], r["regulation"], r["created_by"]) == (
            "access",
            "direct",
            "in_progress",
            "gdpr",
            "test",
        )
        assert r["days"] == 20  # the tenant's policy, not the default month
