"""The one-statement read and the cached catalogue give the bytes of the plain way.

Oracle: tests/provenance/reference.py (the seven per-kind reads the service
used to run, `bundle.assemble`, the `rfc8785` package). Served bodies are
compared with it byte for byte, on the demo seed and on random catalogues built
to hit the edges: versions closed, back-dated and overlapping, rules shadowed
at every level with priority ties, offers and models named oddly in the trace,
non-ASCII identifiers, numbers JCS formats specially, audit rows about every
kind of artifact, emission rows that must stay out.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.db.migrate import load_migrations
from kaireon_server.provenance import bundle, cache, repository
from tests.provenance.conftest import SMALL_SEED, fetch
from tests.provenance.reference import reference_body, reference_sources

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CATEGORIES = ["cards", "loans", "épargne", "Z"]
OFFERS = ["OFFER_A", "offer_b", "Ωffer", "OFFER_10", "OFFER_9"]
MODELS = ["model_a", "Model_B", "mödel_c"]
NAMES = ["min age", "opt-in", "region", "Region", "cap 😀"]


def _moment(rng: random.Random) -> datetime:
    # Microseconds on purpose: every timestamp of the bundle has six digits.
    return T0 + timedelta(days=rng.randint(0, 60), microseconds=rng.randint(0, 10**6 - 1))


def _json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randint(0, 9 if depth < 3 else 5)
    if choice == 0:
        return rng.choice([0, -7, 2**53 - 1, -(2**53) + 1, 17])
    if choice == 1:
        # Floats whose ECMAScript form differs from Python's repr, and plain ones
        # (jsonb keeps numbers as decimals: an integral one beyond 2**53 would come
        # back as an int that RFC 8785 refuses, in either path).
        return rng.choice([0.1, 1e-7, 5e-324, 2.5e-5, -0.25, 2.0, 1234.5678])
    if choice == 2:
        return rng.choice(["plain", "ünïcode", "astral 😀", 'quote " \\ /', "tab\tnew\nline"])
    if choice == 3:
        return rng.choice([True, False, None])
    if choice in (4, 5):
        return rng.choice(["x", "2026-01-02T03:04:05Z"])
    if choice in (6, 7):
        return [_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["a", "B", "é", "😀k", "\u20ac", "z"]
    return {rng.choice(keys): _json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _versions(rng: random.Random) -> list[tuple[datetime, datetime | None]]:
    """Validity intervals of an artifact's versions: consecutive, sometimes overlapping."""
    starts = sorted(_moment(rng) for _ in range(rng.randint(1, 3)))
    out: list[tuple[datetime, datetime | None]] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        if rng.random() < 0.2:
            end = None if end is None else end + timedelta(days=3)  # overlap
        out.append((start, end))
    return out


async def _seed_random(db, tenant: str, rng: random.Random) -> list[str]:
    decisions: list[str] = []
    async with db.transaction(tenant) as con:
        for offer_id in OFFERS:
            for version, (start, end) in enumerate(_versions(rng), 1):
                await con.execute(
                    "INSERT INTO offer (tenant_id, offer_id, version, category_id, name, "
                    "valid_from, valid_to) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    tenant,
                    offer_id,
                    version,
                    rng.choice(CATEGORIES),
                    f"{offer_id} v{version}",
                    start,
                    end,
                )
        for table, id_column, body_column in (
            ("rule", "rule_id", "expression"),
            ("contact_policy", "policy_id", "policy"),
        ):
            for n in range(12):
                level = rng.choice(["global", "category", "offer"])
                scope = {
                    "global": None,
                    "category": rng.choice(CATEGORIES),
                    "offer": rng.choice([*OFFERS, "OFFER_UNKNOWN"]),
                }[level]
                name = rng.choice(NAMES)
                for version, (start, end) in enumerate(_versions(rng), 1):
                    await con.execute(
                        f"INSERT INTO {table} (tenant_id, {id_column}, version, level, "
                        f"scope_id, name, {body_column}, priority, valid_from, valid_to) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        tenant,
                        f"{table}_{n:02d}",
                        version,
                        level,
                        scope,
                        name,
                        {"expr": _json(rng)},
                        rng.randint(0, 2),
                        start,
                        end,
                    )
        for model_id in MODELS:
            for version, (start, end) in enumerate(_versions(rng), 1):
                await con.execute(
                    "INSERT INTO ml_model (tenant_id, model_id, version, model_type, state, "
                    "valid_from, valid_to) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    tenant,
                    model_id,
                    version,
                    rng.choice(["gbm", "logistic"]),
                    {"weights": [_json(rng) for _ in range(3)], "bias": rng.random()},
                    start,
                    end,
                )
            for n in range(rng.randint(0, 3)):
                await con.execute(
                    "INSERT INTO fairness_report (tenant_id, id, model_id, report, created_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    tenant,
                    f"fair_{model_id}_{n}",
                    model_id,
                    {"passed": rng.random() < 0.5, "groups": _json(rng)},
                    # Ties on purpose: then the lowest report id wins.
                    T0 + timedelta(days=rng.choice([5, 20, 20, 40])),
                )
        for n in range(14):
            decided_at = _moment(rng)
            named = [*OFFERS, "OFFER_UNKNOWN", ""]
            items: list[Any] = [
                {"offerId": rng.choice(named), "score": _json(rng)} for _ in range(3)
            ]
            items += rng.choice([[], ["not an object"], [{"offerId": 7}], [[1, 2]]])
            models: list[Any] = [
                {"modelId": rng.choice(MODELS), "version": v}
                for v in rng.sample([1, 2, 3, None, 1.0, True, "2", 2.5, -1], k=3)
            ]
            models += rng.choice([[], [{"version": 1}], [{"modelId": 5}], ["model_a"]])
            await con.execute(
                "INSERT INTO decision_trace (tenant_id, id, customer_id, decided_at, channel, "
                "selected_offer_id, candidates, models, qualification_results, "
                "contact_policy_results, attributes) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                tenant,
                f"dec_{n:02d}",
                f"cust_{n % 4}",
                decided_at,
                "sms",
                # A trace may name no offer (decision 0) or no model at all.
                rng.choice([*OFFERS, None, "", "OFFER_UNKNOWN"]) if n else None,
                items if n % 7 else [],
                models if n % 5 else {"not": "a list"},
                [{"offerId": rng.choice(named), "passed": True}] if n % 3 else "odd",
                [{"offerId": rng.choice(named), "allowed": False}] if n else [],
                {"age": rng.randint(18, 90), "note": _json(rng)},
            )
            decisions.append(f"dec_{n:02d}")
        entities = [
            *(("offer", o) for o in OFFERS),
            *(("offer", f"{o}@1") for o in OFFERS),
            *(("ml_model", f"{m}@{v}") for m in MODELS for v in (1, 2)),
            ("ml_model", MODELS[0]),
            ("rule", "rule_03"),
            ("rule", "rule_05@1"),
            ("contact_policy", "contact_policy_02@1"),
            ("fairness_report", f"fair_{MODELS[1]}_0"),
            *(("decision", d) for d in decisions[:4]),
            ("decision_trace", decisions[1]),
            ("rule_set", "rules"),
        ]
        for _ in range(40):
            entity_type, entity_id = rng.choice(entities)
            await append_audit(
                con,
                tenant,
                action=rng.choice(["published", "reviewed", "decision_provenance_emit"]),
                entity_type=entity_type,
                entity_id=entity_id,
                actor="tester",
                changes={"n": rng.randint(0, 9)},
                now=_moment(rng),
            )
    return decisions


async def _assert_served_equals_reference(channel, db, tenant: str, decisions, build) -> int:
    compared = 0
    for decision_id in decisions:
        sources = await reference_sources(db, tenant, decision_id)
        assert sources is not None
        expected = reference_body(sources, build)
        # Twice: the first may fill the caches, the second is served from them.
        for _ in range(2):
            got = await fetch(channel, tenant, decision_id)
            assert got.body == expected, decision_id
        compared += 1
    return compared


async def test_seeded_decisions_equal_the_reference(channel, db, seeded, server_env):
    decisions = [
        f"dec_{c:05d}_{k}"
        for c in range(1, SMALL_SEED.customers + 1)
        for k in range(1, SMALL_SEED.decisions_per_customer + 1)
    ]
    build = BuildEnv.from_env(server_env)
    assert await _assert_served_equals_reference(channel, db, seeded, decisions, build) == 6


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_catalogues_equal_the_reference(channel, db, tenant, server_env, seed):
    rng = random.Random(seed)
    decisions = await _seed_random(db, tenant, rng)
    build = BuildEnv.from_env(server_env)
    await _assert_served_equals_reference(channel, db, tenant, decisions, build)
    # The data did exercise the paths the oracle is there for.
    shapes = [await reference_sources(db, tenant, d) for d in decisions]
    assert any(s and not s.offers for s in shapes)
    assert any(s and len(s.offers) >= 2 for s in shapes)
    assert any(s and s.fairness is not None for s in shapes)
    assert any(s and any(e.action == "reviewed" for e in s.audit) for s in shapes)


async def test_placeholders_in_the_data_still_give_the_reference_bytes(
    channel, db, seeded, server_env
):
    """The two placeholder strings the fast path splices at, planted in a trace and in
    a rule: the trace falls back to the plain encoding, the rule's entry is not cached."""
    async with db.transaction(seeded) as con:
        await con.execute(
            "UPDATE decision_trace SET attributes = attributes || jsonb_build_object('x', $2::text) "
            "WHERE tenant_id = $1 AND id = 'dec_00001_3'",
            seeded,
            bundle._RULES_HOLE,
        )
        await con.execute(
            "UPDATE rule SET expression = jsonb_build_object('x', $2::text) "
            "WHERE tenant_id = $1 AND rule_id = 'rule_global_optin'",
            seeded,
            cache._AS_OF_HOLE,
        )
    build = BuildEnv.from_env(server_env)
    decisions = ["dec_00001_1", "dec_00001_3", "dec_00002_3"]
    await _assert_served_equals_reference(channel, db, seeded, decisions, build)


def test_the_statement_spells_the_module_constants() -> None:
    """They are literals in the SQL (so PostgreSQL can keep one generic plan for it);
    the statement is the body of the function the read calls."""
    [migration] = [m for m in load_migrations() if m.name == repository.BUNDLE_MIGRATION]
    statement = migration.sql
    assert f"FUNCTION {repository.BUNDLE_FUNCTION}(" in statement
    assert repository.BUNDLE_FUNCTION in repository.BUNDLE_SQL
    assert f"action <> '{repository.EMIT_ACTION}'" in statement
    assert f"entity_type = '{repository.RULE_SET_ENTITY}'" in statement
    types = ", ".join(f"'{t}'" for t in repository.DECISION_ENTITY_TYPES)
    assert f"unnest(ARRAY[{types}])" in statement
