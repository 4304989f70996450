"""Concurrent erasures of overlapping customers, with concurrent writers: no deadlock."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime

from kaireon_server.demo.seed import SeedSize, customer_id, seed_tenant
from kaireon_server.platform.db import Database
from tests.erasure.support import audit_events, chain_valid, erase, only, snapshot

ERASED = [customer_id(n) for n in range(1, 6)]  # each erased four times
WRITTEN = [*ERASED, customer_id(6)]  # writers also feed one customer nobody erases
UNTOUCHED = [customer_id(7), customer_id(8)]


async def _write(db: Database, tenant: str, customer: str, n: int) -> None:
    """One writer transaction touching several customer tables, in data-map order."""
    now = datetime.now(UTC)
    async with db.transaction(tenant) as con:
        await con.execute(
            "INSERT INTO interaction_history (tenant_id, customer_id, offer_id, channel, "
            "event_type, occurred_at) VALUES ($1, $2, 'OFFER_A', 'web', 'impression', $3)",
            tenant,
            customer,
            now,
        )
        await con.execute(
            "INSERT INTO interaction_summary (tenant_id, customer_id, offer_id, channel, "
            "impressions, last_interaction_at) VALUES ($1, $2, 'OFFER_A', 'web', 1, $3) "
            "ON CONFLICT (tenant_id, customer_id, offer_id, channel) "
            "DO UPDATE SET impressions = interaction_summary.impressions + 1",
            tenant,
            customer,
            now,
        )
        await con.execute(
            "INSERT INTO delivery (tenant_id, customer_id, offer_id, channel, destination, "
            "status, sent_at) VALUES ($1, $2, 'OFFER_A', 'email', $3, 'sent', $4)",
            tenant,
            customer,
            f"writer{n}@example.com",
            now,
        )
        await con.execute(
            f'INSERT INTO "ds_{tenant}_loyalty" (tenant_id, customer_id, points, tier) '
            "VALUES ($1, $2, 1, 'bronze') ON CONFLICT (tenant_id, customer_id) "
            "DO UPDATE SET points = EXCLUDED.points + 1",
            tenant,
            customer,
        )


async def test_twenty_concurrent_overlapping_erasures_with_writers(
    stub, audit_stub, db: Database, tenant: str
):
    await seed_tenant(db, tenant, SeedSize(customers=8, interactions_per_customer=20))
    before = await snapshot(db, tenant)
    stop = asyncio.Event()
    writes: Counter[str] = Counter()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not stop.is_set():
            customer = rng.choice(WRITTEN)
            await _write(db, tenant, customer, n)
            writes[customer] += 1
            n += 1
            await asyncio.sleep(0.001)

    writers = [asyncio.create_task(writer(seed)) for seed in range(3)]
    targets = [ERASED[i % len(ERASED)] for i in range(20)]
    random.Random(7).shuffle(targets)
    results = await asyncio.gather(
        *(erase(stub, tenant, c, timeout=60) for c in targets), return_exceptions=True
    )
    stop.set()
    await asyncio.gather(*writers)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert all(r.success for r in results)  # type: ignore[union-attr]
    assert sum(writes.values()) > 0
    assert len(await audit_events(audit_stub, tenant, "gdpr_erasure")) == 20
    assert await chain_valid(audit_stub, tenant)

    # No row was counted twice: an erased customer's counts over its four
    # erasures add up to at most what it had plus what was written for it.
    for customer in ERASED:
        had = sum(n for t, n in only(before, customer).items() if t not in _KEPT)
        deleted = sum(
            r.total_deleted for r, c in zip(results, targets, strict=True) if c == customer
        )  # type: ignore[union-attr]
        assert had <= deleted <= had + 4 * writes[customer], customer

    # Customers nobody erased keep every row (plus what the writers added).
    after = await snapshot(db, tenant)
    for customer in UNTOUCHED:
        assert only(after, customer) == only(before, customer)
    six = customer_id(6)
    assert only(after, six)["interaction_history"] == (
        only(before, six)["interaction_history"] + writes[six]
    )


_KEPT = {
    "consent_record",
    "audit_log",
    "legal_hold",
    "dsar_request",
    "subject_request",
    "processor_outbox",
}
