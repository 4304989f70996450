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

# Every CTE mirrors one step of the former per-kind reads; model.py's
# Decision.offer_ids / model_refs say the same in Python (a test compares them).
# Only the tenant and the decision id are parameters: with the constants as
# literals, PostgreSQL's estimate lets it keep one generic plan for the
# prepared statement instead of planning it (~0.7 ms) on every execution.
BUNDLE_SQL = """
WITH d AS (
    SELECT id, customer_id, decided_at, channel, selected_offer_id, candidates, models,
           qualification_results, contact_policy_results, attributes
      FROM decision_trace
     WHERE tenant_id = $1 AND id = $2
),
-- The selected offer and the non-empty string offerId of every object in the
-- three result lists (a list that is not an array counts as empty).
offer_ref AS (
    SELECT selected_offer_id AS offer_id FROM d WHERE selected_offer_id <> ''
    UNION
    SELECT e.item ->> 'offerId'
      FROM d,
           LATERAL (VALUES (d.candidates), (d.qualification_results),
                           (d.contact_policy_results)) AS src(list),
           LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(src.list) = 'array'
                                             THEN src.list ELSE '[]' END) AS e(item)
     WHERE jsonb_typeof(e.item -> 'offerId') = 'string' AND e.item ->> 'offerId' <> ''
),
-- Overlapping versions would be a catalogue error; the newest one is taken.
offers AS (
    SELECT DISTINCT ON (o.offer_id) o.offer_id, o.version, o.category_id, o.name, o.valid_from
      FROM offer o, d
     WHERE o.tenant_id = $1 AND o.offer_id IN (SELECT offer_id FROM offer_ref)
       AND o.valid_from <= d.decided_at AND (o.valid_to IS NULL OR o.valid_to > d.decided_at)
     ORDER BY o.offer_id, o.version DESC
),
-- Rules and policies in force: global, of the offers' categories, of the offers.
rules AS (
    SELECT a.rule_id AS artifact_id, a.version, a.level, a.scope_id, a.name,
           a.expression::text AS body, a.priority, a.valid_from
      FROM rule a, d
     WHERE a.tenant_id = $1
       AND a.valid_from <= d.decided_at AND (a.valid_to IS NULL OR a.valid_to > d.decided_at)
       AND (a.level = 'global'
            OR (a.level = 'category' AND a.scope_id IN (SELECT category_id FROM offers))
            OR (a.level = 'offer' AND a.scope_id IN (SELECT offer_id FROM offers)))
),
policies AS (
    SELECT a.policy_id AS artifact_id, a.version, a.level, a.scope_id, a.name,
           a.policy::text AS body, a.priority, a.valid_from
      FROM contact_policy a, d
     WHERE a.tenant_id = $1
       AND a.valid_from <= d.decided_at AND (a.valid_to IS NULL OR a.valid_to > d.decided_at)
       AND (a.level = 'global'
            OR (a.level = 'category' AND a.scope_id IN (SELECT category_id FROM offers))
            OR (a.level = 'offer' AND a.scope_id IN (SELECT offer_id FROM offers)))
),
-- Every object of the models list with a string modelId; its version when that
-- is a JSON integer (jsonb prints integers as plain digits), else NULL: the
-- version in force at the decision time.
model_ref AS (
    SELECT e.item ->> 'modelId' AS model_id,
           CASE WHEN jsonb_typeof(e.item -> 'version') = 'number'
                     AND (e.item -> 'version')::text ~ '^-?[0-9]+$'
                THEN (e.item -> 'version')::text::numeric END AS version
      FROM d,
           LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(d.models) = 'array'
                                             THEN d.models ELSE '[]' END) AS e(item)
     WHERE jsonb_typeof(e.item -> 'modelId') = 'string'
),
models AS (
    SELECT m.model_id, m.version, m.model_type,
           sha256(convert_to(m.state::text, 'UTF8')) AS state_key, m.valid_from
      FROM ml_model m, d
     WHERE m.tenant_id = $1
       AND ((m.model_id, m.version::numeric) IN
                (SELECT model_id, version FROM model_ref WHERE version IS NOT NULL)
            OR (m.model_id IN (SELECT model_id FROM model_ref WHERE version IS NULL)
                AND m.valid_from <= d.decided_at
                AND (m.valid_to IS NULL OR m.valid_to > d.decided_at)))
),
-- The latest report of a model found, created at or before the decision.
fairness AS (
    SELECT f.id, f.model_id, f.report, f.created_at
      FROM fairness_report f, d
     WHERE f.tenant_id = $1 AND f.model_id IN (SELECT model_id FROM models)
       AND f.created_at <= d.decided_at
     ORDER BY f.created_at DESC, f.id
     LIMIT 1
),
-- (entity_type, entity_id) of every audit row "about" the decision or an
-- artifact it used; versioned artifacts are named by id or "<id>@<version>".
entity AS (
    SELECT t.entity_type, d.id AS entity_id
      FROM d, unnest(ARRAY['decision', 'decision_trace']) AS t(entity_type)
    UNION SELECT 'ml_model', model_id FROM models
    UNION SELECT 'ml_model', model_id || '@' || version FROM models
    UNION SELECT 'offer', offer_id FROM offers
    UNION SELECT 'offer', offer_id || '@' || version FROM offers
    UNION SELECT 'rule', artifact_id FROM rules
    UNION SELECT 'rule', artifact_id || '@' || version FROM rules
    UNION SELECT 'contact_policy', artifact_id FROM policies
    UNION SELECT 'contact_policy', artifact_id || '@' || version FROM policies
    UNION SELECT 'fairness_report', id FROM fairness
),
-- Those rows plus the rule-set publication in force at the decision time;
-- never the bundle's own emission rows.
audit AS (
    SELECT a.id, a.seq, a.action, a.prev_hash, a.integrity_hash, a.created_at
      FROM audit_log a JOIN entity e
        ON a.entity_type = e.entity_type AND a.entity_id = e.entity_id
     WHERE a.tenant_id = $1 AND a.action <> 'decision_provenance_emit'
    UNION
    SELECT a.id, a.seq, a.action, a.prev_hash, a.integrity_hash, a.created_at
      FROM audit_log a
     WHERE a.tenant_id = $1 AND a.action <> 'decision_provenance_emit'
       AND a.seq = (SELECT s.seq FROM audit_log s, d
                     WHERE s.tenant_id = $1 AND s.entity_type = 'rule_set'
                       AND s.created_at <= d.decided_at
                     ORDER BY s.created_at DESC, s.seq DESC LIMIT 1)
)
SELECT d.*,
       (SELECT array_agg(ROW(offer_id, version, category_id, name, valid_from)
                         ORDER BY offer_id) FROM offers) AS offer_rows,
       (SELECT array_agg(ROW(artifact_id, version, level, scope_id, name, body, priority,
                             valid_from)
                         ORDER BY level, scope_id, artifact_id, version) FROM rules)
           AS rule_rows,
       (SELECT array_agg(ROW(artifact_id, version, level, scope_id, name, body, priority,
                             valid_from)
                         ORDER BY level, scope_id, artifact_id, version) FROM policies)
           AS policy_rows,
       (SELECT array_agg(ROW(model_id, version, model_type, state_key, valid_from)
                         ORDER BY model_id, version) FROM models) AS model_rows,
       (SELECT ROW(id, model_id, report, created_at) FROM fairness) AS fairness_row,
       (SELECT array_agg(ROW(id, seq, action, prev_hash, integrity_hash, created_at)
                         ORDER BY seq) FROM audit) AS audit_rows
  FROM d
"""

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
    if rec is None:
        return None
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
