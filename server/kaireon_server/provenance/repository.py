"""SQL for provenance bundles. Every query filters by tenant_id.

Artifacts are read *as of* the decision time: a version is in force at `t`
when valid_from <= t < valid_to (valid_to NULL = still in force).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from kaireon_server.platform.canonical import sha256_hex
from kaireon_server.provenance.jcs import canonical_json
from kaireon_server.provenance.model import (
    AuditEntry,
    Decision,
    FairnessReport,
    ModelVersion,
    Offer,
    ScopedArtifact,
)

EMIT_ACTION = "decision_provenance_emit"
DECISION_ENTITY = "decision"
# Entity types whose audit rows name a decision by its id.
DECISION_ENTITY_TYPES = ("decision", "decision_trace")
RULE_SET_ENTITY = "rule_set"


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
            state_hash=sha256_hex(canonical_json(r["state"])),
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
