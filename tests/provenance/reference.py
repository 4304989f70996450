"""The reference reads of a bundle: the seven per-kind queries the service used to run.

The service now reads a bundle in one statement and builds most of its body
from a content-keyed cache (provenance/repository.py, cache.py). These are the
plain queries it replaced, one per kind of row, each step fed from the
previous one in Python (Decision.offer_ids / model_refs). Bundles served must
equal `reference_body(await reference_sources(...))`, byte for byte: that is
the oracle of test_fast_path.py. The canonical form here is the `rfc8785`
package itself, not the service's faster encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import rfc8785

from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.canonical import canonical_digest
from kaireon_server.platform.db import Database
from kaireon_server.provenance.bundle import assemble
from kaireon_server.provenance.model import (
    AuditEntry,
    Decision,
    FairnessReport,
    ModelVersion,
    Offer,
    ScopedArtifact,
    Sources,
)
from kaireon_server.provenance.repository import (
    DECISION_ENTITY_TYPES,
    EMIT_ACTION,
    RULE_SET_ENTITY,
)


def reference_body(sources: Sources, build: BuildEnv) -> bytes:
    return bytes(rfc8785.dumps(assemble(sources, build)))


async def get_decision(
    con: asyncpg.Connection, tenant_id: str, decision_id: str
) -> Decision | None:
    rec = await con.fetchrow(
        """
        SELECT id, customer_id, decided_at, channel, selected_offer_id, candidates, models,
               qualification_results, contact_policy_results, attributes
          FROM decision_trace
         WHERE tenant_id = $1 AND id = $2
        """,
        tenant_id,
        decision_id,
    )
    if rec is None:
        return None
    return Decision(
        id=rec["id"],
        customer_id=rec["customer_id"],
        decided_at=rec["decided_at"],
        channel=rec["channel"],
        selected_offer_id=rec["selected_offer_id"],
        candidates=rec["candidates"],
        models=rec["models"],
        qualification_results=rec["qualification_results"],
        contact_policy_results=rec["contact_policy_results"],
        attributes=rec["attributes"],
    )


async def offers_as_of(
    con: asyncpg.Connection, tenant_id: str, offer_ids: Sequence[str], at: datetime
) -> list[Offer]:
    rows: list[Any] = await con.fetch(
        """
        SELECT offer_id, version, category_id, name, valid_from
          FROM offer
         WHERE tenant_id = $1 AND offer_id = ANY($2::text[])
           AND valid_from <= $3 AND (valid_to IS NULL OR valid_to > $3)
         ORDER BY offer_id, version DESC
        """,
        tenant_id,
        list(offer_ids),
        at,
    )
    found: dict[str, Offer] = {}
    for r in rows:
        # Overlapping versions would be a catalogue error; the newest one is taken.
        found.setdefault(
            r["offer_id"],
            Offer(r["offer_id"], r["version"], r["category_id"], r["name"], r["valid_from"]),
        )
    return list(found.values())


def _scoped(rows: Sequence[Any]) -> list[ScopedArtifact]:
    return [
        ScopedArtifact(
            artifact_id=r["artifact_id"],
            version=r["version"],
            level=r["level"],
            scope_id=r["scope_id"],
            name=r["name"],
            body=r["body"],
            priority=r["priority"],
            valid_from=r["valid_from"],
        )
        for r in rows
    ]


async def rules_as_of(
    con: asyncpg.Connection,
    tenant_id: str,
    at: datetime,
    *,
    categories: Sequence[str],
    offer_ids: Sequence[str],
) -> list[ScopedArtifact]:
    """Qualification rules in force at `at`: global, of these categories, of these offers."""
    rows: list[Any] = await con.fetch(
        """
        SELECT rule_id AS artifact_id, version, level, scope_id, name, expression AS body,
               priority, valid_from
          FROM rule
         WHERE tenant_id = $1
           AND valid_from <= $2 AND (valid_to IS NULL OR valid_to > $2)
           AND (level = 'global'
                OR (level = 'category' AND scope_id = ANY($3::text[]))
                OR (level = 'offer' AND scope_id = ANY($4::text[])))
         ORDER BY level, scope_id, rule_id, version
        """,
        tenant_id,
        at,
        list(categories),
        list(offer_ids),
    )
    return _scoped(rows)


async def policies_as_of(
    con: asyncpg.Connection,
    tenant_id: str,
    at: datetime,
    *,
    categories: Sequence[str],
    offer_ids: Sequence[str],
) -> list[ScopedArtifact]:
    """Contact policies in force at `at`: global, of these categories, of these offers."""
    rows: list[Any] = await con.fetch(
        """
        SELECT policy_id AS artifact_id, version, level, scope_id, name, policy AS body,
               priority, valid_from
          FROM contact_policy
         WHERE tenant_id = $1
           AND valid_from <= $2 AND (valid_to IS NULL OR valid_to > $2)
           AND (level = 'global'
                OR (level = 'category' AND scope_id = ANY($3::text[]))
                OR (level = 'offer' AND scope_id = ANY($4::text[])))
         ORDER BY level, scope_id, policy_id, version
        """,
        tenant_id,
        at,
        list(categories),
        list(offer_ids),
    )
    return _scoped(rows)


async def models_used(
    con: asyncpg.Connection, tenant_id: str, refs: Sequence[tuple[str, int | None]], at: datetime
) -> list[ModelVersion]:
    """The model versions a trace names; a reference without a version resolves as of `at`."""
    pinned = [(m, v) for m, v in refs if v is not None]
    floating = sorted({m for m, v in refs if v is None})
    rows: list[Any] = await con.fetch(
        """
        SELECT model_id, version, model_type, state, valid_from
          FROM ml_model
         WHERE tenant_id = $1
           AND ((model_id, version) IN (SELECT * FROM unnest($2::text[], $3::int[]))
                OR (model_id = ANY($4::text[])
                    AND valid_from <= $5 AND (valid_to IS NULL OR valid_to > $5)))
         ORDER BY model_id, version
        """,
        tenant_id,
        [m for m, _ in pinned],
        [v for _, v in pinned],
        floating,
        at,
    )
    return [
        ModelVersion(
            model_id=r["model_id"],
            version=r["version"],
            model_type=r["model_type"],
            # The bundle carries the hash of the state, not the state (it may be large).
            state_hash=canonical_digest(r["state"]),
            valid_from=r["valid_from"],
        )
        for r in rows
    ]


async def fairness_as_of(
    con: asyncpg.Connection, tenant_id: str, model_ids: Sequence[str], at: datetime
) -> FairnessReport | None:
    rec = await con.fetchrow(
        """
        SELECT id, model_id, report, created_at
          FROM fairness_report
         WHERE tenant_id = $1 AND model_id = ANY($2::text[]) AND created_at <= $3
         ORDER BY created_at DESC, id
         LIMIT 1
        """,
        tenant_id,
        list(model_ids),
        at,
    )
    if rec is None:
        return None
    return FairnessReport(rec["id"], rec["model_id"], rec["report"], rec["created_at"])


async def audit_entries(
    con: asyncpg.Connection,
    tenant_id: str,
    entities: Sequence[tuple[str, str]],
    decided_at: datetime,
) -> list[AuditEntry]:
    """Audit rows about the given (entity_type, entity_id) pairs, plus the rule-set
    publication in force at the decision time; never the bundle's own emission rows."""
    rows: list[Any] = await con.fetch(
        """
        SELECT id, seq, action, prev_hash, integrity_hash, created_at
          FROM audit_log
         WHERE tenant_id = $1 AND action <> $4
           AND ((entity_type, entity_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))
                OR seq = (SELECT seq FROM audit_log
                           WHERE tenant_id = $1 AND entity_type = $5 AND created_at <= $6
                           ORDER BY created_at DESC, seq DESC LIMIT 1))
         ORDER BY seq
        """,
        tenant_id,
        [t for t, _ in entities],
        [i for _, i in entities],
        EMIT_ACTION,
        RULE_SET_ENTITY,
        decided_at,
    )
    return [
        AuditEntry(
            id=str(r["id"]),
            seq=r["seq"],
            action=r["action"],
            prev_hash=r["prev_hash"],
            integrity_hash=r["integrity_hash"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


def _audit_entities(sources: Sources) -> list[tuple[str, str]]:
    """(entity_type, entity_id) of every row "about" the decision or an artifact it used.

    Versioned artifacts are named either by id or by "<id>@<version>" (the seed's
    model_version_published rows use the latter); both are looked up.
    """
    pairs = [(t, sources.decision.id) for t in DECISION_ENTITY_TYPES]
    for m in sources.models:
        pairs += [("ml_model", m.model_id), ("ml_model", f"{m.model_id}@{m.version}")]
    for o in sources.offers:
        pairs += [("offer", o.offer_id), ("offer", f"{o.offer_id}@{o.version}")]
    for kind, artifacts in (("rule", sources.rules), ("contact_policy", sources.policies)):
        for a in artifacts:
            pairs += [(kind, a.artifact_id), (kind, f"{a.artifact_id}@{a.version}")]
    if sources.fairness is not None:
        pairs.append(("fairness_report", sources.fairness.id))
    return sorted(set(pairs))


async def reference_sources(db: Database, tenant_id: str, decision_id: str) -> Sources | None:
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        decision = await get_decision(con, tenant_id, decision_id)
        if decision is None:
            return None
        at = decision.decided_at
        offers = await offers_as_of(con, tenant_id, decision.offer_ids(), at)
        categories = sorted({o.category_id for o in offers})
        offer_ids = [o.offer_id for o in offers]
        rules = await rules_as_of(con, tenant_id, at, categories=categories, offer_ids=offer_ids)
        policies = await policies_as_of(
            con, tenant_id, at, categories=categories, offer_ids=offer_ids
        )
        models = await models_used(con, tenant_id, decision.model_refs(), at)
        fairness = await fairness_as_of(con, tenant_id, sorted({m.model_id for m in models}), at)
        partial = Sources(decision, offers, rules, policies, models, fairness, [])
        audit = await audit_entries(con, tenant_id, _audit_entities(partial), at)
    return Sources(decision, offers, rules, policies, models, fairness, audit)
