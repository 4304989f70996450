"""Assembly of the provenance bundle from what the repository read: pure and clock-free.

Determinism: the bundle is a function of database rows and the build
environment only. `generatedAt` is not the emission time but the latest
timestamp among the rows that contributed (the decision time, the validFrom of
every offer, rule, policy and model version used, the fairness report's
creation, and the audit rows in `auditLog`), so another replica of the same
build emitting the same decision later produces the same bytes. The bundle's
own `decision_provenance_emit` rows are excluded from `auditLog` for the
same reason.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaireon_client.jcs import canonical_json, canonical_object
from kaireon_server.platform.build_identity import BuildEnv, build_identity
from kaireon_server.platform.canonical import format_timestamp, sha256_hex
from kaireon_server.provenance import cascade, redaction
from kaireon_server.provenance.cache import BundleCache
from kaireon_server.provenance.model import (
    AuditEntry,
    Decision,
    FairnessReport,
    JsonObject,
    ModelVersion,
    Sources,
)
from kaireon_server.provenance.repository import BundleRows, scoped_artifact

SCHEMA_VERSION = "kaireon.provenance.v1"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Bundle:
    body: bytes
    digest_sha256: str
    model_count: int
    audit_log_count: int


def redacted_trace(decision: Decision) -> JsonObject:
    """The decision trace as the bundle shows it: every field through the redactor.

    The id and the decision time are ours (a primary key and a timestamptz), the
    customer id is personal data by definition and is replaced outright.
    """
    body = redaction.redact(
        {
            "channel": decision.channel,
            "selectedOfferId": decision.selected_offer_id,
            "candidates": decision.candidates,
            "models": decision.models,
            "qualificationResults": decision.qualification_results,
            "contactPolicyResults": decision.contact_policy_results,
            "attributes": decision.attributes,
        }
    )
    return {
        "id": decision.id,
        "customerId": redaction.marker("customer_id"),
        "decidedAt": format_timestamp(decision.decided_at),
        **body,
    }


def _audit(entry: AuditEntry) -> JsonObject:
    return {
        "id": entry.id,
        # seq is an addition to the reference shape: it tells a verifier which
        # entries are neighbours in the chain, whose links it can then check.
        "seq": entry.seq,
        "action": entry.action,
        "prevHash": entry.prev_hash,
        "integrityHash": entry.integrity_hash,
        # The same string the chain hashed, so the entry matches the stored row.
        "timestamp": format_timestamp(entry.created_at),
    }


def latest(decided_at: datetime, *moments: Iterable[datetime]) -> datetime:
    """`generatedAt`: the latest timestamp among the contributing rows (module docstring)."""
    return max([decided_at, *(m for group in moments for m in group)])


def generated_at(sources: Sources) -> datetime:
    return latest(
        sources.decision.decided_at,
        (o.valid_from for o in sources.offers),
        (a.valid_from for a in (*sources.rules, *sources.policies)),
        (m.valid_from for m in sources.models),
        (e.created_at for e in sources.audit),
        () if sources.fairness is None else (sources.fairness.created_at,),
    )


def _document(
    *,
    trace: JsonObject,
    generated: str,
    models: Sequence[ModelVersion],
    rules_by_offer: Any,
    audit: Sequence[AuditEntry],
    fairness: FairnessReport | None,
    build: BuildEnv,
) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "generatedAt": generated,
        "decisionTrace": trace,
        "modelSnapshots": [
            {
                "modelId": m.model_id,
                "version": m.version,
                "modelType": m.model_type,
                "modelStateHashSha256": m.state_hash,
            }
            for m in models
        ],
        "effectiveRulesByOffer": rules_by_offer,
        "auditLog": [_audit(e) for e in audit],
        # Unset BUILD_STARTED_ON / BUILD_FINISHED_ON fall back to generatedAt and
        # an unset GITHUB_RUN_ID to the trace id: both deterministic.
        "buildIdentity": build_identity(
            build, invocation_default=trace["id"], time_default=generated
        ),
        "fairnessSlice": None
        if fairness is None
        else {
            "reportId": fairness.id,
            "modelId": fairness.model_id,
            "createdAt": format_timestamp(fairness.created_at),
            "report": fairness.report,
        },
    }


def assemble(sources: Sources, build: BuildEnv) -> dict[str, Any]:
    """The bundle as a JSON value (before canonicalisation): the definition of a bundle."""
    trace = redacted_trace(sources.decision)
    as_of = trace["decidedAt"]
    rules_by_offer = {
        offer.offer_id: cascade.effective_rules(offer, sources.rules, sources.policies, as_of=as_of)
        for offer in sources.offers
    }
    generated = format_timestamp(generated_at(sources))
    return _document(
        trace=trace,
        generated=generated,
        models=sources.models,
        rules_by_offer=rules_by_offer,
        audit=sources.audit,
        fairness=sources.fairness,
        build=build,
    )


def _bundle(body: bytes, models: Sequence[ModelVersion], audit: Sequence[AuditEntry]) -> Bundle:
    return Bundle(
        body=body,
        digest_sha256=sha256_hex(body),
        model_count=len(models),
        audit_log_count=len(audit),
    )


def encode(sources: Sources, build: BuildEnv) -> Bundle:
    """Assemble and canonicalise (RFC 8785); the digest is over exactly these bytes."""
    return _bundle(canonical_json(assemble(sources, build)), sources.models, sources.audit)


def sources_of(rows: BundleRows, models: Sequence[ModelVersion]) -> Sources:
    """The rows of one statement as `assemble` takes them (bodies parsed)."""
    return Sources(
        rows.decision,
        rows.offers,
        [scoped_artifact(r) for r in rows.rules],
        [scoped_artifact(r) for r in rows.policies],
        list(models),
        rows.fairness,
        rows.audit,
    )


# Stands for effectiveRulesByOffer in the rest of the document; random per
# process (see cache.py's asOf hole for why that is enough).
_RULES_HOLE = f"\ue000rules-{secrets.token_hex(16)}\ue000"
_RULES_HOLE_JSON = canonical_json(_RULES_HOLE)


def encode_rows(
    tenant_id: str,
    rows: BundleRows,
    models: Sequence[ModelVersion],
    build: BuildEnv,
    cache: BundleCache,
) -> Bundle:
    """`encode`, with the catalogue part from the cache: the same bytes, a fraction of the CPU.

    The document is canonicalised without effectiveRulesByOffer (a placeholder
    string holds its place), whose canonical bytes are then put in that place,
    composed from the cached per-offer entries. RFC 8785 writes every member
    value independently of its context, so the result equals `encode` of the
    same rows (a test compares both on every seeded decision and on random data).
    """
    trace = redacted_trace(rows.decision)
    as_of = trace["decidedAt"]
    generated = latest(
        rows.decision.decided_at,
        (o.valid_from for o in rows.offers),
        (r[7] for r in rows.rules),
        (p[7] for p in rows.policies),
        (m.valid_from for m in models),
        (e.created_at for e in rows.audit),
        () if rows.fairness is None else (rows.fairness.created_at,),
    )
    rest = _document(
        trace=trace,
        generated=format_timestamp(generated),
        models=models,
        rules_by_offer=_RULES_HOLE,
        audit=rows.audit,
        fairness=rows.fairness,
        build=build,
    )
    parts = canonical_json(rest).split(_RULES_HOLE_JSON)
    if len(parts) != 2:
        # The placeholder also occurs in the trace: the plain way.
        return encode(sources_of(rows, models), build)
    entries = {
        offer.offer_id: cache.offer_entry(tenant_id, offer, rows.rules, rows.policies, as_of)
        for offer in rows.offers
    }
    body = parts[0] + canonical_object(entries) + parts[1]
    return _bundle(body, models, rows.audit)


def audit_changes(bundle: Bundle, *, signed: bool) -> Mapping[str, Any]:
    """The `changes` of the emission audit row (non-personal by construction)."""
    return {
        "digestSha256": bundle.digest_sha256,
        "signed": signed,
        "modelCount": bundle.model_count,
        "auditLogCount": bundle.audit_log_count,
    }
