"""The GetDecisionProvenance use case: read as of decision time, assemble, sign, audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kaireon_server.platform.audit_chain import AuditBatcher, AuditRow
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import InvalidArgument, NotFound
from kaireon_server.platform.signing import UNSIGNED, Signer
from kaireon_server.provenance import repository
from kaireon_server.provenance.bundle import Bundle, audit_changes, encode
from kaireon_server.provenance.model import Sources

MAX_DECISION_ID_LENGTH = 256
Clock = Callable[[], datetime]


def system_clock(offset_seconds: float = 0.0) -> Clock:
    """The wall clock, optionally shifted (tests run replicas "minutes apart")."""
    offset = timedelta(seconds=offset_seconds)
    return lambda: datetime.now(UTC) + offset


@dataclass(frozen=True, slots=True)
class Emission:
    bundle: Bundle
    signature: str
    audit_event_id: str


def validate_decision_id(decision_id: str) -> str:
    if not decision_id:
        raise InvalidArgument.field("decision_id", "required")
    if len(decision_id) > MAX_DECISION_ID_LENGTH:
        raise InvalidArgument.field("decision_id", f"at most {MAX_DECISION_ID_LENGTH} characters")
    if not decision_id.isprintable():
        raise InvalidArgument.field("decision_id", "must be printable text")
    return decision_id


def _audit_entities(sources: Sources) -> list[tuple[str, str]]:
    """(entity_type, entity_id) of every row "about" the decision or an artifact it used.

    Versioned artifacts are named either by id or by "<id>@<version>" (the seed's
    model_version_published rows use the latter); both are looked up.
    """
    pairs = [(t, sources.decision.id) for t in repository.DECISION_ENTITY_TYPES]
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


async def read_sources(db: Database, tenant_id: str, decision_id: str) -> Sources:
    # One repeatable-read snapshot: the bundle never mixes rows from before and
    # after a concurrent change.
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        decision = await repository.get_decision(con, tenant_id, decision_id)
        if decision is None:
            # Another tenant's decision is indistinguishable from a missing one.
            raise NotFound("no decision with this id", reason="DECISION_NOT_FOUND")
        at = decision.decided_at
        offers = await repository.offers_as_of(con, tenant_id, decision.offer_ids(), at)
        categories = sorted({o.category_id for o in offers})
        offer_ids = [o.offer_id for o in offers]
        rules = await repository.rules_as_of(
            con, tenant_id, at, categories=categories, offer_ids=offer_ids
        )
        policies = await repository.policies_as_of(
            con, tenant_id, at, categories=categories, offer_ids=offer_ids
        )
        models = await repository.models_used(con, tenant_id, decision.model_refs(), at)
        fairness = await repository.fairness_as_of(
            con, tenant_id, sorted({m.model_id for m in models}), at
        )
        partial = Sources(decision, offers, rules, policies, models, fairness, [])
        audit = await repository.audit_entries(con, tenant_id, _audit_entities(partial), at)
    return Sources(decision, offers, rules, policies, models, fairness, audit)


@dataclass
class ProvenanceEmitter:
    db: Database
    signer: Signer
    build: BuildEnv
    clock: Clock
    audit: AuditBatcher

    async def emit(self, identity: Identity, decision_id: str) -> Emission:
        decision_id = validate_decision_id(decision_id)
        sources = await read_sources(self.db, identity.tenant_id, decision_id)
        bundle = encode(sources, self.build)
        signature = self.signer.sign(bundle.body)
        # The emission row is appended after the read snapshot, never inside it
        # (holding the tenant's chain lock during the reads would serialise every
        # emission), through the group-committing writer. No bundle is returned
        # unless its row is committed.
        record = await self.audit.append(
            identity.tenant_id,
            AuditRow(
                action=repository.EMIT_ACTION,
                entity_type=repository.DECISION_ENTITY,
                entity_id=decision_id,
                actor=identity.actor,
                changes=audit_changes(bundle, signed=signature != UNSIGNED),
                subject_id=sources.decision.customer_id,
                now=self.clock(),
            ),
        )
        return Emission(bundle=bundle, signature=signature, audit_event_id=record.id)
