"""Bundles as stored, signed bytes (issue #22, migration 0221).

A decision's second emission keeps the bundle; later ones serve those bytes
(the same signature, which ECDSA would not give twice) until a write that
could change the bundle drops it, in the writer's transaction. What is served
always equals a fresh build of the current rows, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from kaireon_server.demo.seed import seed_tenant
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.migrate import load_migrations
from kaireon_server.platform.errors import NotFound
from kaireon_server.provenance import stored
from kaireon_server.provenance.bundle import encode_rows
from kaireon_server.provenance.cache import BundleCache
from kaireon_server.provenance.emit import Emission, ProvenanceEmitter, read_rows, system_clock
from tests.provenance.conftest import (
    AFTER_CHANGE,
    BEFORE_CHANGE,
    SMALL_SEED,
    admin,
    emitter_on,
)
from tests.provenance.test_determinism import CONTRIBUTING

DECISIONS = [f"dec_0000{c}_{k}" for c in (1, 2) for k in (1, 2, 3)]


@pytest.fixture
async def emitter(db: Database, server_env: dict[str, str]) -> AsyncIterator[ProvenanceEmitter]:
    async with emitter_on(db, server_env) as emitter:
        yield emitter


async def _fresh(emitter: ProvenanceEmitter, tenant: str, decision_id: str) -> bytes:
    cache = BundleCache()
    rows, models = await read_rows(emitter.db, tenant, decision_id, cache)
    return encode_rows(tenant, rows, models, emitter.build, cache).body


async def _unstored(db: Database, tenant: str, decision_id: str, key: str) -> stored.Unstored:
    async with db.single_statements() as con:
        [found] = await stored.read_many(con, tenant, [decision_id], key)
    assert not isinstance(found, stored.Stored)
    return found[0]


async def _kept(db: Database, tenant: str, decision_id: str) -> int:
    async with db.transaction(tenant) as con:
        return int(
            await con.fetchval(
                "SELECT count(*) FROM provenance_bundle_store "
                "WHERE tenant_id = $1 AND decision_id = $2",
                tenant,
                decision_id,
            )
        )


async def _kept_emission(emitter: ProvenanceEmitter, tenant: str, decision_id: str) -> Emission:
    """Emit until kept (the second emission keeps); return the emission kept."""
    await emitter.emit(admin(tenant), decision_id)
    kept = await emitter.emit(admin(tenant), decision_id)
    assert await _kept(emitter.db, tenant, decision_id) == 1
    return kept


async def test_a_stored_bundle_is_the_fresh_build_byte_for_byte(emitter, seeded, db) -> None:
    identity = admin(seeded)
    for decision_id in DECISIONS:
        first = await emitter.emit(identity, decision_id)
        assert await _kept(db, seeded, decision_id) == 0  # read once: not worth keeping
        second = await _kept_emission(emitter, seeded, decision_id)
        assert second.bundle == first.bundle
        again = await emitter.emit(identity, decision_id)
        # Served from the store: the same signature (ECDSA signs at random).
        assert again.signature == second.signature
        assert again.bundle == second.bundle
        assert again.bundle.body == await _fresh(emitter, seeded, decision_id)
        # Each emission still has its own audit row.
        assert again.audit_event_id != second.audit_event_id


async def test_one_call_reads_kept_unstored_and_missing_decisions_in_order(
    emitter, seeded, database_url
) -> None:
    """kaireon_provenance_emissions (migration 0240) answers a batch in the order
    asked, and reads what a build needs only for a decision with no kept bundle:
    the build's function runs for the unstored and the missing decision alone."""
    kept, unstored, missing = DECISIONS[0], DECISIONS[1], "dec_99999_9"
    await _kept_emission(emitter, seeded, kept)
    owner = await asyncpg.connect(database_url)
    try:
        async with owner.transaction():
            await owner.execute("SET LOCAL track_functions = 'pl'")
            found = await stored.read_many(
                owner, seeded, [unstored, kept, missing, DECISIONS[2]], emitter.build_key
            )
            calls = await owner.fetchval(
                "SELECT pg_stat_get_xact_function_calls("
                "'kaireon_provenance_bundle(text, text)'::regprocedure)"
            )
    finally:
        await owner.close()
    assert calls == 3  # unstored, missing, DECISIONS[2]; never the kept one
    assert isinstance(found[1], stored.Stored)
    for position in (0, 3):
        seen, rows = found[position]
        assert rows is not None and seen.generation is not None
    assert found[2] == (stored.Unstored(None), None)
    assert [rows.decision.id for _, rows in (found[0], found[3])] == [unstored, DECISIONS[2]]


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


async def test_a_read_looks_each_decision_up_and_never_walks_the_tenants_store(
    emitter, seeded, database_url
) -> None:
    """The function's statement runs as a generic plan (planned once per session,
    migration 0240): that plan must look each decision's kept bundle up by its
    key, whatever the number the tenant keeps. Unfenced, the generic plan read
    every kept bundle of the tenant and filtered them in a join."""
    for decision_id in DECISIONS:
        await _kept_emission(emitter, seeded, decision_id)
    [migration] = [m for m in load_migrations() if m.name.startswith("0240_")]
    body = migration.sql.split("$fn$")[1]
    statement = body.split("RETURN QUERY", 1)[1].split(";\n", 1)[0]
    for name, number in (("p_tenant", 1), ("p_decision_ids", 2), ("p_build_key", 3)):
        statement = statement.replace(name, f"${number}")
    statement = statement.replace("coalesce(generation, 0)", "0::bigint")
    owner = await asyncpg.connect(database_url)
    try:
        config = await owner.fetchval(
            "SELECT proconfig FROM pg_proc WHERE proname = 'kaireon_provenance_emissions'"
        )
        assert "plan_cache_mode=force_generic_plan" in config
        async with owner.transaction():
            await owner.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await owner.execute("SET LOCAL enable_seqscan = off")
            await owner.execute(f"PREPARE read_kept(text, text[], text) AS {statement}")
            # EXPLAIN EXECUTE takes no bind parameters: literals, made by the server.
            tenant, decision, key = await owner.fetchrow(
                "SELECT quote_literal($1), quote_literal($2), quote_literal($3)",
                seeded,
                DECISIONS[0],
                emitter.build_key,
            )
            explained = await owner.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) "
                f"EXECUTE read_kept({tenant}, ARRAY[{decision}], {key})"
            )
    finally:
        await owner.close()
    nodes = list(_plan_nodes(json.loads(explained)[0]["Plan"]))
    store = [n for n in nodes if n.get("Relation Name") == "provenance_bundle_store"]
    assert store and all(n["Node Type"] == "Index Scan" for n in store), store
    assert all(n["Actual Rows"] <= 1 and n["Actual Loops"] == 1 for n in store), store
    assert not any("Rows Removed by Join Filter" in n for n in nodes)


async def test_a_kept_bundle_is_never_served_to_another_tenant(emitter, seeded, db, tenant) -> None:
    """Another tenant asking for the same decision id gets its own decision's
    bundle, built from its own rows, or NOT_FOUND when it has no such decision:
    the store is looked up under the caller's tenant, never by the id alone."""
    kept = await _kept_emission(emitter, seeded, DECISIONS[0])
    twin = f"{tenant}twin"  # the same demo data, so the same decision ids
    await seed_tenant(db, twin, SMALL_SEED)
    theirs = await emitter.emit(admin(twin), DECISIONS[0])
    assert theirs.bundle.body != kept.bundle.body
    assert theirs.bundle.body == await _fresh(emitter, twin, DECISIONS[0])
    assert theirs.signature != kept.signature
    with pytest.raises(NotFound):
        await emitter.emit(admin(f"{tenant}none"), DECISIONS[0])
    stream = await emitter.emit_many(admin(f"{tenant}none"), [DECISIONS[0], DECISIONS[1]])
    assert stream == [None, None]


async def test_another_build_never_reads_this_builds_bundle(
    emitter, seeded, db, server_env
) -> None:
    identity = admin(seeded)
    first = await emitter.emit(identity, AFTER_CHANGE)
    other = ProvenanceEmitter(
        db=db,
        signer=emitter.signer,
        build=BuildEnv.from_env({"GIT_SHA": "a" * 40}),
        clock=system_clock(),
        audit=emitter.audit,
    )
    assert other.build_key != emitter.build_key
    theirs = await other.emit(identity, AFTER_CHANGE)
    assert theirs.bundle.body != first.bundle.body  # it carries its own build identity
    assert theirs.bundle.body == await _fresh(other, seeded, AFTER_CHANGE)


@pytest.mark.parametrize("name", sorted(CONTRIBUTING))
async def test_a_contributing_change_drops_the_stored_bundle(emitter, seeded, db, name) -> None:
    identity = admin(seeded)
    before = await _kept_emission(emitter, seeded, AFTER_CHANGE)
    async with db.transaction(seeded) as con:
        await con.execute(CONTRIBUTING[name], seeded)
    assert await _kept(db, seeded, AFTER_CHANGE) == 0
    after = await emitter.emit(identity, AFTER_CHANGE)
    assert after.bundle.digest_sha256 != before.bundle.digest_sha256
    assert after.bundle.body == await _fresh(emitter, seeded, AFTER_CHANGE)


@pytest.mark.parametrize(
    ("entity_type", "entity_id", "dropped"),
    [
        ("decision", AFTER_CHANGE, True),
        ("decision_trace", AFTER_CHANGE, True),
        ("ml_model", "model_uplift@2", True),
        ("offer", "anything", True),
        ("rule_set", "published", True),
        ("decision", BEFORE_CHANGE, False),  # another decision's row
        ("customer", "cust_00001", False),  # never cited by a bundle
    ],
)
async def test_an_audit_row_a_bundle_may_cite_drops_it(
    emitter, seeded, db, entity_type, entity_id, dropped
) -> None:
    identity = admin(seeded)
    await _kept_emission(emitter, seeded, AFTER_CHANGE)
    async with db.transaction(seeded) as con:
        await append_audit(
            con,
            seeded,
            action="artifact_reviewed",
            entity_type=entity_type,
            entity_id=entity_id,
            actor="tester",
        )
    assert await _kept(db, seeded, AFTER_CHANGE) == (0 if dropped else 1)
    served = await emitter.emit(identity, AFTER_CHANGE)
    assert served.bundle.body == await _fresh(emitter, seeded, AFTER_CHANGE)


async def test_an_erased_decision_is_never_served_from_the_store(emitter, seeded, db) -> None:
    identity = admin(seeded)
    await _kept_emission(emitter, seeded, AFTER_CHANGE)
    async with db.transaction(seeded) as con:
        await con.execute(
            "DELETE FROM decision_trace WHERE tenant_id = $1 AND id = $2", seeded, AFTER_CHANGE
        )
    assert await _kept(db, seeded, AFTER_CHANGE) == 0
    with pytest.raises(NotFound):
        await emitter.emit(identity, AFTER_CHANGE)


async def test_a_bundle_read_before_a_write_is_not_kept(emitter, seeded, db) -> None:
    key = emitter.build_key
    seen = await _unstored(db, seeded, AFTER_CHANGE, key)
    bundle_body = await _fresh(emitter, seeded, AFTER_CHANGE)
    first = await emitter.emit(admin(seeded), AFTER_CHANGE)
    assert first.bundle.body == bundle_body

    async def keep() -> bool:
        async with db.single_statements() as con:
            return await stored.keep(
                con, seeded, AFTER_CHANGE, key, bundle=first.bundle, signature="x", seen=seen
            )

    # Kept against an older point (the emission's own row is no write that counts).
    assert await keep()
    # A write about the decision committed since `seen`: nothing kept.
    async with db.transaction(seeded) as con:
        await append_audit(
            con,
            seeded,
            action="reviewed",
            entity_type="decision",
            entity_id=AFTER_CHANGE,
            actor="tester",
        )
    assert not await keep()
    assert await _kept(db, seeded, AFTER_CHANGE) == 0

    # A writer in flight (an audit row about the decision holds the tenant's
    # provenance lock until it commits): nothing kept, and nothing waits for it.
    seen = await _unstored(db, seeded, AFTER_CHANGE, key)
    async with db.transaction(seeded) as con:
        await append_audit(
            con,
            seeded,
            action="reviewed",
            entity_type="decision",
            entity_id=AFTER_CHANGE,
            actor="tester",
        )
        kept = await asyncio.wait_for(keep(), 5)
    assert kept is False
    assert await _kept(db, seeded, AFTER_CHANGE) == 0


async def test_emission_and_customer_audit_rows_do_not_stop_keeping(emitter, seeded, db) -> None:
    """Audit rows no bundle cites (emissions, customers) leave the generation alone:
    a keep() beside such a writer in flight still keeps."""
    key = emitter.build_key
    seen = await _unstored(db, seeded, BEFORE_CHANGE, key)
    emission = await emitter.emit(admin(seeded), BEFORE_CHANGE)  # its row: no bump
    async with db.transaction(seeded) as con:
        await append_audit(
            con, seeded, action="erased", entity_type="customer", entity_id="c", actor="t"
        )
        async with db.single_statements() as other:
            kept = await stored.keep(
                other,
                seeded,
                BEFORE_CHANGE,
                key,
                bundle=emission.bundle,
                signature="x",
                seen=seen,
            )
    assert kept is True
