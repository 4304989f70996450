"""Grouped reads under hostile input: emissions of one tenant that arrive
together share a read statement, so one caller's bad id must never fail or leak
into another's answer. Invalid ids are refused before they are queued, another
tenant's decision is NOT_FOUND, and only the valid emission is audited."""

from __future__ import annotations

import asyncio
import secrets

from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import InvalidArgument, NotFound
from kaireon_server.provenance.emit import Emission
from kaireon_server.provenance.repository import EMIT_ACTION
from tests.provenance.conftest import AFTER_CHANGE, admin, emitter_on

# The seeded tenant has customers 1 and 2; the other tenant also has customer 3.
ONLY_THE_OTHER_TENANTS = "dec_00003_1"
INVALID_IDS = ["", AFTER_CHANGE + "\n", "dec\x00_1", "d" * 257, "dec_\u202e1"]


async def _emitted(db: Database, tenant: str) -> int:
    async with db.transaction(tenant, readonly=True) as con:
        return int(
            await con.fetchval(
                "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2",
                tenant,
                EMIT_ACTION,
            )
        )


async def test_a_bad_id_beside_good_ones_fails_alone_and_changes_nothing(
    db: Database, seeded: str, server_env: dict[str, str]
) -> None:
    other = f"t{secrets.token_hex(5)}"
    await seed_tenant(db, other, SeedSize(customers=3, interactions_per_customer=1))
    identity = admin(seeded)
    before = await _emitted(db, seeded), await _emitted(db, other)
    async with emitter_on(db, server_env) as emitter:
        answers = await asyncio.gather(
            emitter.emit(identity, AFTER_CHANGE),
            emitter.emit(identity, ONLY_THE_OTHER_TENANTS),
            *(emitter.emit(identity, bad) for bad in INVALID_IDS),
            emitter.emit(identity, AFTER_CHANGE),
            return_exceptions=True,
        )
    first, foreign, *invalid, last = answers
    assert isinstance(first, Emission) and isinstance(last, Emission), answers
    assert first.bundle.body == last.bundle.body
    assert b"dec_00001_3" in first.bundle.body
    assert isinstance(foreign, NotFound)  # another tenant's decision: as if missing
    assert all(isinstance(a, InvalidArgument) for a in invalid), invalid
    # Two emission rows (the two valid calls) and nothing for the other tenant.
    assert (await _emitted(db, seeded), await _emitted(db, other)) == (before[0] + 2, before[1])
