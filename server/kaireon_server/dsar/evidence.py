"""The evidence proof of a DSAR export package (docs/AUDIT.md, "Evidence carries proofs").

The package is downloaded after its job committed the `dsar_export_completed`
row (which records the package's sha256), normally long after the integrator
checkpointed it, so the download carries that row's proof without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaireon_server.audit import tlog
from kaireon_server.dsar import repository
from kaireon_server.dsar.model import DsarRecord
from kaireon_server.platform.db import Database


@dataclass(frozen=True)
class ExportEvidence:
    # "" for exports completed before audit rows recorded their digest.
    audit_event_id: str
    proof: tlog.EvidenceProof


async def export_evidence(
    db: Database, settings: tlog.TlogSettings, record: DsarRecord
) -> ExportEvidence:
    async with db.transaction(record.tenant_id, readonly=True) as con:
        event_id = await repository.completion_event_id(con, record)
    if event_id is None:
        return ExportEvidence("", tlog.EvidenceProof("", pending=False))
    proof = await tlog.evidence_proof_of(
        db, settings, tenant_id=record.tenant_id, event_id=event_id, wait=0.0
    )
    return ExportEvidence(event_id, proof)
