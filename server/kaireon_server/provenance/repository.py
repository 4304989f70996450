"""SQL for provenance bundles: one statement reads everything a bundle cites.

Artifacts are read *as of* the decision time: a version is in force at `t`
when valid_from <= t < valid_to (valid_to NULL = still in force). Every table
is filtered by tenant_id.

Why one statement: a bundle used to take seven reads, one round trip each, and
the round trips (a socket write and an event-loop turn per statement) were the
largest part of an emission's CPU. The statement below derives each step from
the previous one in CTEs, exactly as the seven reads did (the offers and model
versions the trace names, the rules and policies of those offers' levels, the
fairness report of the models found, the audit rows about all of them) and
answers one row: the trace's columns plus one array per kind of artifact,
which asyncpg decodes to tuples. One statement also sees one snapshot.

The statement lives in the database as the function kaireon_provenance_bundle
(tenant and decision id as arguments), so that one call is one round trip.

Catalogue bodies (rule expressions, contact policies) come as their jsonb
text and model states as the sha256 of theirs: the bundle cache keys on this
content (see cache.py), so a hit costs neither decoding nor hashing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from kaireon_server.provenance.model import (
    AuditEntry,
    Decision,
    FairnessReport,
    Offer,
    ScopedArtifact,
)

EMIT_ACTION = "decision_provenance_emit"
DECISION_ENTITY = "decision"
# Entity types whose audit rows name a decision by its id.
DECISION_ENTITY_TYPES = ("decision", "decision_trace")
RULE_SET_ENTITY = "rule_set"

# Artifact tuples as the statement returns them (see the ROW(...) lists below).
# Rule / policy: (id, version, level, scope_id, name, body jsonb text, priority, valid_from).
ArtifactRow = tuple[str, int, str, str | None, str, str, int, datetime]
# Model: (model_id, version, model_type, sha256 of the state's jsonb text, valid_from).
ModelRow = tuple[str, int, str, bytes, datetime]

# The statement itself is the body of kaireon_provenance_bundle (migration
# 0160_provenance_bundle_read.sql, replaced by 0232): every CTE mirrors one step of the former
# per-kind reads; model.py's Decision.offer_ids / model_refs say the same in
# Python (a test compares them). The function sets the tenant for row-level
# security from its argument, so the read needs no transaction of its own: one
# round trip (see emit.read_rows).
BUNDLE_FUNCTION = "kaireon_provenance_bundle"
BUNDLE_MIGRATION = "0232_provenance_citations_per_entity.sql"
# The function returns SETOF record (PL/pgSQL may not declare record[] columns):
# the column list is the statement's select list.
BUNDLE_SQL = f"""
SELECT * FROM {BUNDLE_FUNCTION}($1, $2) AS b(
    id text, customer_id text, decided_at timestamptz, channel text, selected_offer_id text,
    candidates jsonb, models jsonb, qualification_results jsonb, contact_policy_results jsonb,
    attributes jsonb, offer_rows record[], rule_rows record[], policy_rows record[],
    model_rows record[], fairness_row record, audit_rows record[])
"""  # noqa: S608 - a constant name

# Model states by the key the statement gave them; read only on a cache miss,
# in the same snapshot.
MODEL_STATES_SQL = """
SELECT sha256(convert_to(state::text, 'UTF8')) AS state_key, state
  FROM ml_model
 WHERE tenant_id = $1 AND (model_id, version) IN (SELECT * FROM unnest($2::text[], $3::int[]))
"""


@dataclass(frozen=True, slots=True)
class BundleRows:
    """What the statement read for one decision, as it came (tuples, jsonb text)."""

    decision: Decision
    offers: list[Offer]
    rules: list[ArtifactRow]
    policies: list[ArtifactRow]
    models: list[ModelRow]
    fairness: FairnessReport | None
    audit: list[AuditEntry]


def scoped_artifact(row: ArtifactRow) -> ScopedArtifact:
    """A rule or policy tuple as the cascade takes it (the body parsed)."""
    artifact_id, version, level, scope_id, name, body, priority, valid_from = row
    return ScopedArtifact(
        artifact_id=artifact_id,
        version=version,
        level=level,  # type: ignore[arg-type]  # the table's CHECK constraint
        scope_id=scope_id,
        name=name,
        # The text of the jsonb, parsed as the pool's jsonb codec would.
        body=json.loads(body),
        priority=priority,
        valid_from=valid_from,
    )


async def read_bundle(
    con: asyncpg.Connection, tenant_id: str, decision_id: str
) -> BundleRows | None:
    rec = await con.fetchrow(BUNDLE_SQL, tenant_id, decision_id)
    return None if rec is None else bundle_rows(rec)


def bundle_rows(rec: asyncpg.Record) -> BundleRows:
    """The rows of a record with BUNDLE_SQL's columns."""
    fairness = rec["fairness_row"]
    return BundleRows(
        decision=Decision(
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
        ),
        offers=[Offer(*o) for o in rec["offer_rows"] or ()],
        rules=list(rec["rule_rows"] or ()),
        policies=list(rec["policy_rows"] or ()),
        models=list(rec["model_rows"] or ()),
        fairness=None if fairness is None else FairnessReport(*fairness),
        audit=[
            AuditEntry(str(a[0]), a[1], a[2], a[3], a[4], a[5]) for a in rec["audit_rows"] or ()
        ],
    )


async def model_states(
    con: asyncpg.Connection, tenant_id: str, refs: Sequence[tuple[str, int]]
) -> dict[bytes, Any]:
    """The states of these model versions, by the state key of BUNDLE_SQL."""
    rows: list[Any] = await con.fetch(
        MODEL_STATES_SQL, tenant_id, [m for m, _ in refs], [v for _, v in refs]
    )
    return {bytes(r["state_key"]): r["state"] for r in rows}


async def decisions_between(
    con: asyncpg.Connection,
    tenant_id: str,
    *,
    start: datetime,
    end: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[tuple[datetime, str]]:
    """A keyset page of the tenant's decisions with start <= decided_at < end,
    by (decided_at, id), after `after` (migration 0224's index)."""
    if after is None:
        rows = await con.fetch(
            "SELECT decided_at, id FROM decision_trace WHERE tenant_id = $1 "
            "AND decided_at >= $2 AND decided_at < $3 ORDER BY decided_at, id LIMIT $4",
            tenant_id,
            start,
            end,
            limit,
        )
    else:
        rows = await con.fetch(
            "SELECT decided_at, id FROM decision_trace WHERE tenant_id = $1 "
            "AND (decided_at, id) > ($2, $3) AND decided_at < $4 "
            "ORDER BY decided_at, id LIMIT $5",
            tenant_id,
            after[0],
            after[1],
            end,
            limit,
        )
    return [(r["decided_at"], r["id"]) for r in rows]
