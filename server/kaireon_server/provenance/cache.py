"""Per-process caches of what a bundle derives from the catalogue, keyed by content.

Two derived values dominate an emission's CPU once the reads are one
statement: the `effectiveRulesByOffer` entries (the cascade, then RFC 8785 of
about 90% of the body) and the hash of every model state (RFC 8785 of the
state, then sha256). Both are pure functions of catalogue rows, so they are
kept here, keyed by *the rows themselves*:

- an offer's entry by the offer's columns and every column (body text
  included) of each rule and policy that applies to it, as read in this
  bundle's snapshot; the entry is stored as canonical bytes around the one
  decision-specific value in it (`explainCascade.asOf`);
- a model state's hash by the sha256 PostgreSQL computes over the state's
  jsonb text in the same statement.

So a hit needs no trust in anything but this snapshot's rows: an edited,
closed, back-dated or newly published version, or a row changed in place,
gives a different key, i.e. a miss, on every process at once. Nothing here is
about a customer: traces, customer ids and audit rows are never cached, every
bundle reads its decision from the database, so an erased decision is
NOT_FOUND everywhere immediately. Entries are per tenant (the tenant is part
of every key) and bounded (least recently used goes first).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from kaireon_server.platform.canonical import canonical_json, sha256_hex
from kaireon_server.platform.lru import Lru
from kaireon_server.provenance import cascade
from kaireon_server.provenance.model import Offer
from kaireon_server.provenance.repository import ArtifactRow, scoped_artifact

MAX_FRAGMENT_BYTES = 32 * 1024 * 1024
MAX_MODEL_HASHES = 4096


# Stands for the decision time while an entry is canonicalised; random per
# process, so catalogue text cannot contain it by design (if it ever does, the
# split below finds it twice and the entry is simply not cached).
_AS_OF_HOLE = f"\ue000as-of-{secrets.token_hex(16)}\ue000"
_AS_OF_HOLE_JSON = canonical_json(_AS_OF_HOLE)

FragmentKey = tuple[str, Offer, tuple[ArtifactRow, ...], tuple[ArtifactRow, ...]]
Fragment = tuple[bytes, bytes]  # canonical bytes before and after the asOf value
ModelKey = tuple[str, str, int, bytes]


def applicable(rows: Sequence[ArtifactRow], offer: Offer) -> tuple[ArtifactRow, ...]:
    """The rules or policies of the offer's levels (cascade._applies, on tuples)."""
    category, offer_id = offer.category_id, offer.offer_id
    return tuple(
        r
        for r in rows
        if r[2] == "global"
        or (r[2] == "category" and r[3] == category)
        or (r[2] == "offer" and r[3] == offer_id)
    )


def _fragment_weight(key: FragmentKey, value: Fragment) -> int:
    # Dominated by the bodies held in the key and the bytes of the entry.
    bodies = sum(len(r[5]) + len(r[4]) for r in (*key[2], *key[3]))
    return bodies + len(value[0]) + len(value[1]) + 512


@dataclass
class BundleCache:
    fragments: Lru[FragmentKey, Fragment] = field(
        default_factory=lambda: Lru(MAX_FRAGMENT_BYTES, _fragment_weight)
    )
    model_hashes: Lru[ModelKey, str] = field(default_factory=lambda: Lru(MAX_MODEL_HASHES))

    def offer_entry(
        self,
        tenant_id: str,
        offer: Offer,
        rules: Sequence[ArtifactRow],
        policies: Sequence[ArtifactRow],
        as_of: str,
    ) -> bytes:
        """Canonical bytes of the offer's effectiveRulesByOffer entry as of `as_of`."""
        key = (tenant_id, offer, applicable(rules, offer), applicable(policies, offer))
        fragment = self.fragments.get(key)
        if fragment is None:
            fragment = self._render(key)
            if fragment is None:
                return self._canonical_entry(key, as_of)
            self.fragments.put(key, fragment)
        return fragment[0] + canonical_json(as_of) + fragment[1]

    @staticmethod
    def _canonical_entry(key: FragmentKey, as_of: str) -> bytes:
        _, offer, rules, policies = key
        entry = cascade.effective_rules(
            offer,
            [scoped_artifact(r) for r in rules],
            [scoped_artifact(r) for r in policies],
            as_of=as_of,
        )
        return canonical_json(entry)

    def _render(self, key: FragmentKey) -> Fragment | None:
        parts = self._canonical_entry(key, _AS_OF_HOLE).split(_AS_OF_HOLE_JSON)
        if len(parts) != 2:
            return None
        return parts[0], parts[1]

    def model_hash(self, key: ModelKey) -> str | None:
        return self.model_hashes.get(key)

    def put_model_state(self, key: ModelKey, state: object) -> str:
        """Hash a model state (sha256 of its RFC 8785 form) and keep the hash."""
        digest = sha256_hex(canonical_json(state))
        self.model_hashes.put(key, digest)
        return digest
