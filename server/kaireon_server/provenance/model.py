"""Plain domain records of the artifacts a provenance bundle is built from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Level = Literal["global", "category", "offer"]
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    id: str
    customer_id: str
    decided_at: datetime
    channel: str
    selected_offer_id: str | None
    candidates: Any
    models: Any
    qualification_results: Any
    contact_policy_results: Any
    attributes: Any

    def offer_ids(self) -> list[str]:
        """Every offer the trace names (selected, candidates, results), first seen first."""
        seen: dict[str, None] = {}
        if self.selected_offer_id:
            seen[self.selected_offer_id] = None
        for source in (self.candidates, self.qualification_results, self.contact_policy_results):
            for item in source if isinstance(source, list) else ():
                offer = item.get("offerId") if isinstance(item, dict) else None
                if isinstance(offer, str) and offer:
                    seen[offer] = None
        return list(seen)

    def model_refs(self) -> list[tuple[str, int | None]]:
        """(modelId, version or None) of every model the trace used, deduplicated."""
        seen: dict[tuple[str, int | None], None] = {}
        for item in self.models if isinstance(self.models, list) else ():
            if not isinstance(item, dict) or not isinstance(item.get("modelId"), str):
                continue
            version = item.get("version")
            if isinstance(version, bool) or not isinstance(version, int):
                version = None
            seen[(item["modelId"], version)] = None
        return list(seen)


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    version: int
    category_id: str
    name: str
    valid_from: datetime


@dataclass(frozen=True, slots=True)
class ScopedArtifact:
    """A qualification rule or a contact policy version (same shape, different body)."""

    artifact_id: str
    version: int
    level: Level
    scope_id: str | None
    name: str
    body: Any
    priority: int
    valid_from: datetime


@dataclass(frozen=True, slots=True)
class ModelVersion:
    model_id: str
    version: int
    model_type: str
    state_hash: str
    valid_from: datetime


@dataclass(frozen=True, slots=True)
class FairnessReport:
    id: str
    model_id: str
    report: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    seq: int
    action: str
    prev_hash: str
    integrity_hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Sources:
    """Everything read for one bundle, as of the decision time."""

    decision: Decision
    offers: list[Offer]
    rules: list[ScopedArtifact]
    policies: list[ScopedArtifact]
    models: list[ModelVersion]
    fairness: FairnessReport | None
    audit: list[AuditEntry]
