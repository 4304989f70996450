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

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaireon_server.platform.build_identity import BuildEnv, build_identity
from kaireon_server.platform.canonical import format_timestamp, sha256_hex
from kaireon_server.provenance import cascade, redaction
from kaireon_server.provenance.jcs import canonical_json
from kaireon_server.provenance.model import AuditEntry, Decision, JsonObject, Sources

SCHEMA_VERSION = "kaireon.provenance.v1"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Bundle:
    body: bytes
    digest_sha256: str
    generated_at: str
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


def generated_at(sources: Sources) -> datetime:
    """The latest timestamp among the contributing rows (see the module docstring)."""
    moments = [sources.decision.decided_at]
    moments += [o.valid_from for o in sources.offers]
    moments += [a.valid_from for a in (*sources.rules, *sources.policies)]
    moments += [m.valid_from for m in sources.models]
    moments += [e.created_at for e in sources.audit]
    if sources.fairness is not None:
        moments.append(sources.fairness.created_at)
    return max(moments)


def assemble(sources: Sources, build: BuildEnv) -> dict[str, Any]:
    """The bundle as a JSON value (before canonicalisation)."""
    trace = redacted_trace(sources.decision)
    as_of = trace["decidedAt"]
    generated = format_timestamp(generated_at(sources))
    fairness = sources.fairness
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
            for m in sources.models
        ],
        "effectiveRulesByOffer": {
            offer.offer_id: cascade.effective_rules(
                offer, sources.rules, sources.policies, as_of=as_of
            )
            for offer in sources.offers
        },
        "auditLog": [_audit(e) for e in sources.audit],
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


def encode(sources: Sources, build: BuildEnv) -> Bundle:
    """Assemble and canonicalise (RFC 8785); the digest is over exactly these bytes."""
    value = assemble(sources, build)
    body = canonical_json(value)
    return Bundle(
        body=body,
        digest_sha256=sha256_hex(body),
        generated_at=value["generatedAt"],
        model_count=len(value["modelSnapshots"]),
        audit_log_count=len(value["auditLog"]),
    )


def audit_changes(bundle: Bundle, *, signed: bool) -> Mapping[str, Any]:
    """The `changes` of the emission audit row (non-personal by construction)."""
    return {
        "digestSha256": bundle.digest_sha256,
        "signed": signed,
        "modelCount": bundle.model_count,
        "auditLogCount": bundle.audit_log_count,
    }
