"""Round trips to PostgreSQL per CreateDsarRequest, counted on the wire (issue #22).

A TCP proxy between the pool and PostgreSQL counts what the client sends before
it waits for an answer. A create was a pooled transaction: BEGIN, the tenant
setting, the insert, a read back, the audit row, COMMIT and the pool's reset
(7). Now it is one statement (migration 0237's kaireon_dsar_create and the
audit row beside it, chained at its commit): 1. A retry with the same
idempotency key adds a read-only transaction reading the stored request (with
its export's availability); a key reused for another request writes nothing.
"""

from __future__ import annotations

import secrets

import asyncpg

from kaireon_server.dsar.notify import Notifier
from kaireon_server.dsar.requests import DsarRequests
from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.listener import Listener
from kaireon_server.platform.errors import AlreadyExists
from tests.support.tcp_proxy import TcpProxy


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
            record: object = await requests.create(
                tenant_id=tenant,
                actor="test",
                request_type="export",
                subject_id=subject,
                encrypt=False,
                idempotency_key=key,
            )
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
