"""Effective qualification rules and contact policies of an offer, with explainCascade.

The platform's inheritance rule: rules apply at three levels (global, the
offer's category, the offer itself); when several share a name, the most
specific level wins (offer > category > global) and, within a level, the
highest priority (then the lowest id and version, so the choice is total).
Rules with different names all apply.

Inputs are the versions in force at the decision time (the repository selects
them by validity interval), so a rule edited after the decision changes
nothing here. The trace lists, per name, every level considered with the
candidates found there, the winner and what it shadowed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.provenance.model import JsonObject, Level, Offer, ScopedArtifact

LEVELS: tuple[Level, ...] = ("global", "category", "offer")
PRECEDENCE: list[str] = ["offer", "category", "global"]


def _applies(artifact: ScopedArtifact, offer: Offer) -> bool:
    if artifact.level == "global":
        return True
    if artifact.level == "category":
        return artifact.scope_id == offer.category_id
    return artifact.scope_id == offer.offer_id


def _order(artifact: ScopedArtifact) -> tuple[int, str, int]:
    return (-artifact.priority, artifact.artifact_id, artifact.version)


def _ref(artifact: ScopedArtifact, id_key: str) -> JsonObject:
    return {
        id_key: artifact.artifact_id,
        "version": artifact.version,
        "priority": artifact.priority,
    }


def _render(artifact: ScopedArtifact, id_key: str, body_key: str) -> JsonObject:
    return {
        id_key: artifact.artifact_id,
        "version": artifact.version,
        "level": artifact.level,
        "scopeId": artifact.scope_id,
        "name": artifact.name,
        body_key: artifact.body,
        "priority": artifact.priority,
        # validTo is left out on purpose: closing a version after the decision
        # must not change this decision's bundle.
        "validFrom": format_timestamp(artifact.valid_from),
    }


def _scope(level: Level, offer: Offer) -> str | None:
    return {"global": None, "category": offer.category_id, "offer": offer.offer_id}[level]


def resolve(
    artifacts: Iterable[ScopedArtifact], offer: Offer, *, id_key: str, body_key: str
) -> tuple[list[JsonObject], list[JsonObject]]:
    """(effective artifacts, explain trace per name) for one offer."""
    by_name: dict[str, dict[Level, list[ScopedArtifact]]] = defaultdict(lambda: defaultdict(list))
    for artifact in artifacts:
        if _applies(artifact, offer):
            by_name[artifact.name][artifact.level].append(artifact)
    effective: list[ScopedArtifact] = []
    explain: list[JsonObject] = []
    for name in sorted(by_name):
        levels = by_name[name]
        for found in levels.values():
            found.sort(key=_order)
        winning_level = next(level for level in reversed(LEVELS) if levels.get(level))
        winner = levels[winning_level][0]
        effective.append(winner)
        shadowed = [
            {"level": level, id_key: a.artifact_id, "version": a.version}
            for level in LEVELS
            for a in levels.get(level, [])
            if a is not winner
        ]
        explain.append(
            {
                "name": name,
                "levels": [
                    {
                        "level": level,
                        "scopeId": _scope(level, offer),
                        "candidates": [_ref(a, id_key) for a in levels.get(level, [])],
                    }
                    for level in LEVELS
                ],
                "winner": {
                    "level": winning_level,
                    id_key: winner.artifact_id,
                    "version": winner.version,
                },
                "shadowed": shadowed,
            }
        )
    effective.sort(key=lambda a: (-a.priority, a.name, a.artifact_id))
    return [_render(a, id_key, body_key) for a in effective], explain


def effective_rules(
    offer: Offer,
    rules: Iterable[ScopedArtifact],
    policies: Iterable[ScopedArtifact],
    *,
    as_of: str,
) -> dict[str, Any]:
    """The effectiveRulesByOffer entry of one offer."""
    qualification, explain_rules = resolve(rules, offer, id_key="ruleId", body_key="expression")
    contact, explain_policies = resolve(policies, offer, id_key="policyId", body_key="policy")
    return {
        "offer": {
            "offerId": offer.offer_id,
            "version": offer.version,
            "categoryId": offer.category_id,
            "name": offer.name,
            "validFrom": format_timestamp(offer.valid_from),
        },
        "qualificationRules": qualification,
        "contactPolicies": contact,
        "explainCascade": {
            "asOf": as_of,
            "precedence": PRECEDENCE,
            "qualificationRules": explain_rules,
            "contactPolicies": explain_policies,
        },
    }
