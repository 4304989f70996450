"""Fills a tenant with deterministic, realistic synthetic data for every table.

Identifiers are stable so documentation and perf scripts can name real rows:
customers `cust_00001`…, decisions `dec_00001_1`… (customer number, then 1..k),
offers `OFFER_A`…`OFFER_F`, models `model_propensity`, `model_uplift`.
Everything derives from a seeded PRNG and a fixed epoch: two runs give the same rows.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

# Demo data is synthetic and must be reproducible: a seeded PRNG, not a CSPRNG.
# ruff: noqa: S311, E501
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.db import Database
from kaireon_server.platform.db.dynamic_tables import register_dynamic_table
from kaireon_server.platform.db.identifiers import DYNAMIC_TABLE, quote_ident

log = logging.getLogger(__name__)

DEMO_TENANT = "demo"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
RULES_CHANGED_AT = EPOCH + timedelta(days=60)
OFFERS = ["OFFER_A", "OFFER_B", "OFFER_C", "OFFER_D", "OFFER_E", "OFFER_F"]
CATEGORIES = {
    "OFFER_A": "cards",
    "OFFER_B": "cards",
    "OFFER_C": "loans",
    "OFFER_D": "loans",
    "OFFER_E": "savings",
    "OFFER_F": "savings",
}
CHANNELS = ["email", "sms", "web", "app"]
EVENTS = ["recommendation", "impression", "click", "conversion"]
FIRST = ["Alice", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas"]
LAST = ["Moreau", "Rossi", "Novak", "Schmidt", "Yilmaz", "Kowalski", "Silva", "Berg", "Costa"]
STREETS = ["Rue de Rivoli", "Via Roma", "Hauptstrasse", "Calle Mayor", "Kungsgatan"]
MODELS = [("model_propensity", "gradient_boosted"), ("model_uplift", "logistic_regression")]


@dataclass(frozen=True)
class SeedSize:
    customers: int = 50
    interactions_per_customer: int = 20
    decisions_per_customer: int = 3


def customer_id(n: int) -> str:
    return f"cust_{n:05d}"


def decision_id(customer: int, k: int) -> str:
    return f"dec_{customer:05d}_{k}"


def _person(rng: random.Random, n: int) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{n}@example.com",
        "phone": f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        "address": f"{rng.randint(1, 200)} {rng.choice(STREETS)}, {rng.randint(10000, 99999)}",
        "birthDate": f"19{rng.randint(50, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }


async def _copy(
    con: asyncpg.Connection, table: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    if rows:
        await con.copy_records_to_table(table, records=rows, columns=columns)


async def _seed_catalogue(con: asyncpg.Connection, tenant: str) -> None:
    offers: list[tuple[Any, ...]] = []
    rules: list[tuple[Any, ...]] = []
    policies: list[tuple[Any, ...]] = []
    models: list[tuple[Any, ...]] = []
    reports: list[tuple[Any, ...]] = []
    for i, offer in enumerate(OFFERS):
        offers.append(
            (
                tenant,
                offer,
                1,
                CATEGORIES[offer],
                f"{offer.title()} v1",
                {"rank": i},
                EPOCH,
                RULES_CHANGED_AT,
            )
        )
        offers.append(
            (
                tenant,
                offer,
                2,
                CATEGORIES[offer],
                f"{offer.title()} v2",
                {"rank": i},
                RULES_CHANGED_AT,
                None,
            )
        )
        rules.append(
            (
                tenant,
                f"rule_{offer.lower()}",
                1,
                "offer",
                offer,
                f"{offer} eligibility",
                {"attribute": "age", "op": ">=", "value": 18},
                10,
                EPOCH,
                RULES_CHANGED_AT,
            )
        )
        rules.append(
            (
                tenant,
                f"rule_{offer.lower()}",
                2,
                "offer",
                offer,
                f"{offer} eligibility",
                {"attribute": "age", "op": ">=", "value": 21},
                10,
                RULES_CHANGED_AT,
                None,
            )
        )
    for category in sorted(set(CATEGORIES.values())):
        rules.append(
            (
                tenant,
                f"rule_cat_{category}",
                1,
                "category",
                category,
                f"{category} region",
                {"attribute": "country", "op": "in", "value": ["FR", "IT", "DE"]},
                5,
                EPOCH,
                None,
            )
        )
        policies.append(
            (
                tenant,
                f"policy_cat_{category}",
                1,
                "category",
                category,
                f"{category} weekly cap",
                {"maxContacts": 2, "periodDays": 7},
                5,
                EPOCH,
                None,
            )
        )
    rules.append(
        (
            tenant,
            "rule_global_optin",
            1,
            "global",
            None,
            "marketing opt-in",
            {"attribute": "marketingOptIn", "op": "==", "value": True},
            1,
            EPOCH,
            None,
        )
    )
    policies.append(
        (
            tenant,
            "policy_global_cap",
            1,
            "global",
            None,
            "global daily cap",
            {"maxContacts": 3, "periodDays": 1},
            1,
            EPOCH,
            None,
        )
    )
    policies.append(
        (
            tenant,
            "policy_offer_a_cooldown",
            1,
            "offer",
            "OFFER_A",
            "OFFER_A cooldown",
            {"cooldownDays": 14},
            10,
            EPOCH,
            RULES_CHANGED_AT,
        )
    )
    policies.append(
        (
            tenant,
            "policy_offer_a_cooldown",
            2,
            "offer",
            "OFFER_A",
            "OFFER_A cooldown",
            {"cooldownDays": 30},
            10,
            RULES_CHANGED_AT,
            None,
        )
    )
    for index, (model_id, model_type) in enumerate(MODELS):
        for version in (1, 2):
            start = EPOCH if version == 1 else RULES_CHANGED_AT
            end = RULES_CHANGED_AT if version == 1 else None
            # Distinct per model and version, so each has its own state hash in bundles.
            state = {
                "weights": [round(0.1 * version * (j + 1) + 0.01 * index, 3) for j in range(8)],
                "bias": round(version * 0.05 + 0.5 * index, 3),
            }
            models.append((tenant, model_id, version, model_type, "active", state, start, end))
        reports.append(
            (
                tenant,
                f"fair_{model_id}_1",
                model_id,
                {"metric": "demographic_parity", "groups": {"A": 0.91, "B": 0.88}, "passed": True},
                EPOCH + timedelta(days=1),
            )
        )
        reports.append(
            (
                tenant,
                f"fair_{model_id}_2",
                model_id,
                {"metric": "demographic_parity", "groups": {"A": 0.93, "B": 0.92}, "passed": True},
                RULES_CHANGED_AT + timedelta(days=1),
            )
        )
    await _copy(
        con,
        "offer",
        [
            "tenant_id",
            "offer_id",
            "version",
            "category_id",
            "name",
            "attributes",
            "valid_from",
            "valid_to",
        ],
        offers,
    )
    cols = [
        "tenant_id",
        "rule_id",
        "version",
        "level",
        "scope_id",
        "name",
        "expression",
        "priority",
        "valid_from",
        "valid_to",
    ]
    await _copy(con, "rule", cols, rules)
    cols[0:7] = ["tenant_id", "policy_id", "version", "level", "scope_id", "name", "policy"]
    await _copy(con, "contact_policy", cols, policies)
    await _copy(
        con,
        "ml_model",
        [
            "tenant_id",
            "model_id",
            "version",
            "model_type",
            "status",
            "state",
            "valid_from",
            "valid_to",
        ],
        models,
    )
    await _copy(
        con, "fairness_report", ["tenant_id", "id", "model_id", "report", "created_at"], reports
    )


def _dynamic_table_names(tenant: str) -> tuple[str, str]:
    return f"ds_{tenant}_loyalty", f"ds_{tenant}_web_sessions"


async def _create_dynamic_tables(con: asyncpg.Connection, tenant: str) -> None:
    """DDL, as the owner: the platform creates ds_* tables, not the application role."""
    loyalty, sessions = _dynamic_table_names(tenant)
    await con.execute(
        f"CREATE TABLE IF NOT EXISTS {quote_ident(loyalty, pattern=DYNAMIC_TABLE)} (tenant_id text NOT NULL, "
        "customer_id text NOT NULL, points integer NOT NULL, tier text NOT NULL, "
        "PRIMARY KEY (tenant_id, customer_id))"
    )
    # Holds customer-type rows but keys them by an anonymous session id only:
    # erasure skips it and says so (skippedTables).
    await con.execute(
        f"CREATE TABLE IF NOT EXISTS {quote_ident(sessions, pattern=DYNAMIC_TABLE)} (tenant_id text NOT NULL, "
        "session_id text NOT NULL, pages integer NOT NULL, PRIMARY KEY (tenant_id, session_id))"
    )


async def _seed_dynamic_tables(con: asyncpg.Connection, tenant: str, size: SeedSize) -> None:
    loyalty, sessions = _dynamic_table_names(tenant)
    # Registering secures the table: row-level security, as migration 0100 gives tenant tables.
    for schema_id, table in (("loyalty", loyalty), ("web_sessions", sessions)):
        await register_dynamic_table(con, tenant_id=tenant, schema_id=schema_id, table_name=table)
    rng = random.Random(f"{tenant}:ds")
    await _copy(
        con,
        loyalty,
        ["tenant_id", "customer_id", "points", "tier"],
        [
            (tenant, customer_id(n), rng.randint(0, 5000), rng.choice(["bronze", "silver", "gold"]))
            for n in range(1, size.customers + 1)
        ],
    )
    await _copy(
        con,
        sessions,
        ["tenant_id", "session_id", "pages"],
        [(tenant, f"sess_{n:06d}", rng.randint(1, 30)) for n in range(1, size.customers * 2 + 1)],
    )


async def _seed_customer(con: asyncpg.Connection, tenant: str, n: int, size: SeedSize) -> None:
    rng = random.Random(f"{tenant}:{n}")
    cid = customer_id(n)
    person = _person(rng, n)
    base = EPOCH + timedelta(days=rng.randint(0, 100), seconds=n)
    history: list[tuple[Any, ...]] = []
    summaries: dict[tuple[str, str], list[Any]] = {}
    for i in range(size.interactions_per_customer):
        offer, channel = rng.choice(OFFERS), rng.choice(CHANNELS)
        event = EVENTS[min(3, int(rng.expovariate(1.2)))]
        at = base + timedelta(minutes=17 * i)
        history.append(
            (
                tenant,
                cid,
                offer,
                channel,
                event,
                None,
                at,
                {"device": rng.choice(["ios", "android", "desktop"])},
            )
        )
        s = summaries.setdefault((offer, channel), [0, 0, 0, at])
        s[0] += event != "recommendation"
        s[1] += event in ("click", "conversion")
        s[2] += event == "conversion"
        s[3] = at
    await _copy(
        con,
        "interaction_history",
        [
            "tenant_id",
            "customer_id",
            "offer_id",
            "channel",
            "event_type",
            "decision_id",
            "occurred_at",
            "attributes",
        ],
        history,
    )
    await _copy(
        con,
        "interaction_summary",
        [
            "tenant_id",
            "customer_id",
            "offer_id",
            "channel",
            "impressions",
            "clicks",
            "conversions",
            "last_interaction_at",
        ],
        [(tenant, cid, o, c, *v) for (o, c), v in sorted(summaries.items())],
    )
    traces: list[tuple[Any, ...]] = []
    for k in range(1, size.decisions_per_customer + 1):
        decided = EPOCH + timedelta(days=20 * k + n % 7, hours=n % 24)
        chosen = rng.sample(OFFERS, 3)
        candidates = [
            {"offerId": o, "score": round(rng.random(), 4), "selected": j == 0}
            for j, o in enumerate(chosen)
        ]
        version = 1 if decided < RULES_CHANGED_AT else 2
        traces.append(
            (
                tenant,
                decision_id(n, k),
                cid,
                decided,
                rng.choice(CHANNELS),
                chosen[0],
                candidates,
                [{"modelId": m, "version": version} for m, _ in MODELS],
                [{"offerId": o, "ruleId": f"rule_{o.lower()}", "passed": True} for o in chosen],
                [
                    {"offerId": o, "policyId": f"policy_cat_{CATEGORIES[o]}", "allowed": True}
                    for o in chosen
                ],
                {
                    "customer": {
                        **person,
                        "segment": rng.choice(["young_professional", "family", "retired"]),
                    },
                    "request": {
                        "ip": f"192.0.2.{n % 250 + 1}",
                        "note": f"called from {person['phone']} asking about {chosen[0]}",
                    },
                    "country": "FR",
                    "age": 20 + n % 50,
                    "marketingOptIn": True,
                },
            )
        )
    await _copy(
        con,
        "decision_trace",
        [
            "tenant_id",
            "id",
            "customer_id",
            "decided_at",
            "channel",
            "selected_offer_id",
            "candidates",
            "models",
            "qualification_results",
            "contact_policy_results",
            "attributes",
        ],
        traces,
    )
    await _copy(
        con,
        "suppression",
        ["tenant_id", "customer_id", "offer_id", "policy_id", "reason", "created_at", "expires_at"],
        [
            (
                tenant,
                cid,
                "OFFER_A",
                "policy_offer_a_cooldown",
                "cooldown",
                base,
                base + timedelta(days=14),
            )
        ],
    )
    await _copy(
        con,
        "attribution_result",
        [
            "tenant_id",
            "customer_id",
            "decision_id",
            "offer_id",
            "outcome",
            "value",
            "attributed_at",
        ],
        [
            (
                tenant,
                cid,
                t[1],
                t[5],
                "conversion",
                round(rng.uniform(5, 500), 2),
                t[3] + timedelta(days=2),
            )
            for t in traces[:2]
        ],
    )
    await _copy(
        con,
        "variant_assignment",
        ["tenant_id", "customer_id", "experiment_id", "variant", "assigned_at"],
        [(tenant, cid, "exp_subject_line", rng.choice(["control", "treatment"]), base)],
    )
    await _copy(
        con,
        "identity_link",
        [
            "tenant_id",
            "cluster_id",
            "customer_id",
            "identifier_type",
            "identifier_value",
            "linked_at",
        ],
        [
            (tenant, f"cluster_{n:05d}", cid, "email", person["email"], base),
            (tenant, f"cluster_{n:05d}", cid, "phone", person["phone"], base),
        ],
    )
    await _copy(
        con,
        "journey_enrollment",
        ["tenant_id", "customer_id", "journey_id", "state", "enrolled_at"],
        [(tenant, cid, "journey_onboarding", rng.choice(["active", "completed"]), base)],
    )
    await _copy(
        con,
        "delivery",
        ["tenant_id", "customer_id", "offer_id", "channel", "destination", "status", "sent_at"],
        [
            (tenant, cid, t[5], "email", person["email"], "delivered", t[3] + timedelta(minutes=5))
            for t in traces
        ],
    )
    await _copy(
        con,
        "consent_record",
        ["tenant_id", "customer_id", "purpose", "granted", "source", "recorded_at"],
        [
            (tenant, cid, "marketing", True, "web_form", base),
            (tenant, cid, "profiling", n % 3 != 0, "app", base),
        ],
    )


async def seed_tenant(db: Database, tenant: str = DEMO_TENANT, size: SeedSize = SeedSize()) -> None:
    """Insert the demo data set for `tenant` in one transaction, as the owner: it
    creates the tenant's dynamic tables and loads rows with COPY, which row-level
    security refuses to the application role."""
    async with db.owner_connection() as con, con.transaction():
        await con.execute("SELECT set_config('kaireon.tenant_id', $1, true)", tenant)
        await _create_dynamic_tables(con, tenant)
        await _seed_catalogue(con, tenant)
        await _seed_dynamic_tables(con, tenant, size)
        for n in range(1, size.customers + 1):
            await _seed_customer(con, tenant, n, size)
        for model_id, _ in MODELS:
            for version in (1, 2):
                when = EPOCH if version == 1 else RULES_CHANGED_AT
                await append_audit(
                    con,
                    tenant,
                    action="model_version_published",
                    entity_type="ml_model",
                    entity_id=f"{model_id}@{version}",
                    actor="seed",
                    changes={"modelId": model_id, "version": version},
                    now=when,
                )
        await append_audit(
            con,
            tenant,
            action="rules_published",
            entity_type="rule_set",
            entity_id="v2",
            actor="seed",
            changes={"validFrom": RULES_CHANGED_AT.isoformat()},
            now=RULES_CHANGED_AT,
        )
        await append_audit(
            con,
            tenant,
            action="demo_seeded",
            entity_type="tenant",
            entity_id=tenant,
            actor="seed",
            changes={
                "customers": size.customers,
                "interactionsPerCustomer": size.interactions_per_customer,
            },
            now=RULES_CHANGED_AT + timedelta(seconds=1),
        )
    log.info("tenant seeded", extra={"customers": size.customers})


async def tenant_is_empty(db: Database, tenant: str) -> bool:
    async with db.transaction(tenant, readonly=True) as con:
        found = await con.fetchval("SELECT 1 FROM offer WHERE tenant_id = $1 LIMIT 1", tenant)
    return found is None


async def seed_if_empty(
    db: Database, tenant: str = DEMO_TENANT, size: SeedSize = SeedSize()
) -> bool:
    if await tenant_is_empty(db, tenant):
        await seed_tenant(db, tenant, size)
        return True
    return False
