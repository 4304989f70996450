"""Bundles as stored, signed bytes (issue #22; migration 0221).

The second emission of a decision keeps its bundle's bytes, digest and
signature in `provenance_bundle_store` (keeping costs PostgreSQL about what a
read does: not worth it for a bundle read once); later emissions read them
back in one statement instead of reading every row the bundle cites and
building it again. The database drops a stored bundle in the transaction of any write
that could change it (the decision erased or updated, a catalogue row, an
audit row the bundle could cite), and a bundle built from rows read before
such a write committed is never kept (see the migration). So what is served
is always what a fresh build would give, byte for byte (a test compares).

A stored bundle belongs to one *build key*: the build identity the bundle
carries, the signing key, the source of the code that assembles bundles and
the schema (migration files). Another build, key or schema never reads it;
its first emission replaces it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

import kaireon_client
from kaireon_client.jcs import canonical_json
from kaireon_server import platform as platform_package
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.db.migrate import load_migrations
from kaireon_server.provenance.bundle import Bundle
from kaireon_server.provenance.repository import BundleRows, bundle_rows


@functools.cache
def _code_fingerprint() -> bytes:
    """What bundle assembly runs, as bytes: this package, the shared canonical
    JSON and build identity code, the client's encoders, every migration."""
    here = Path(__file__).resolve().parent
    client = Path(kaireon_client.__file__).resolve().parent
    platform_dir = Path(next(iter(platform_package.__path__))).resolve()
    files = [
        *sorted(here.glob("*.py")),
        platform_dir / "build_identity.py",
        platform_dir / "canonical.py",
        *sorted(client.glob("*.py")),
    ]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for migration in load_migrations():
        digest.update(migration.name.encode() + b"\0" + migration.checksum.encode() + b"\0")
    return digest.digest()


def build_key(build: BuildEnv, signing_key_id: str) -> str:
    """The key a stored bundle is valid for (see the module docstring)."""
    digest = hashlib.sha256(canonical_json(dataclasses.asdict(build)))
    digest.update(b"\0" + signing_key_id.encode() + b"\0" + _code_fingerprint())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Stored:
    bundle: Bundle
    signature: str
    # The decision's customer: the emission's audit row names its subject.
    customer_id: str


@dataclass(frozen=True, slots=True)
class Unstored:
    """No stored bundle; what a bundle built from a later read is kept against."""

    generation: int | None
    # Emitted before: keep this emission's bundle.
    emitted: bool = False


# What an emission's read finds: the stored bundle, or the rows to build it from
# (None: no such decision) with what keeping it will be checked against.
Found = Stored | tuple[Unstored, BundleRows | None]


# kaireon_provenance_emissions's columns (migration 0240): the position of the
# decision asked, the stored bundle's, the generation, emitted, then BUNDLE_SQL's.
_EMISSION_COLUMNS = """
    n bigint, stored_body bytea, stored_digest text, stored_signature text,
    stored_model_count integer, stored_audit_log_count integer, stored_customer_id text,
    generation bigint, emitted boolean, id text, customer_id text, decided_at timestamptz,
    channel text, selected_offer_id text, candidates jsonb, models jsonb,
    qualification_results jsonb, contact_policy_results jsonb, attributes jsonb,
    offer_rows record[], rule_rows record[], policy_rows record[], model_rows record[],
    fairness_row record, audit_rows record[]"""
# Many decisions in one call (the tenant and the settings set once); a missing
# decision gives a row of nulls but its position. Constant SQL text: the column
# list above is a literal, never input.
EMISSIONS_SQL = f"SELECT * FROM kaireon_provenance_emissions($1, $2, $3) AS e({_EMISSION_COLUMNS})"  # noqa: S608
KEEP_SQL = "SELECT kaireon_provenance_keep($1, $2, $3, $4, $5, $6, $7, $8, $9)"


async def read_many(
    con: asyncpg.Connection, tenant_id: str, decision_ids: Sequence[str], key: str
) -> list[Found]:
    """An emission's read of each decision, in one statement that sets the tenant
    itself (Database.single_statements), in the order given: the stored bundle,
    or what a build needs (None: no such decision) and what keeping it will be
    checked against."""
    rows = await con.fetch(EMISSIONS_SQL, tenant_id, list(decision_ids), key)
    found = sorted(rows, key=lambda row: row["n"])
    if [row["n"] for row in found] != list(range(1, len(decision_ids) + 1)):
        raise RuntimeError("kaireon_provenance_emissions: not one row per decision")
    return [_found(row) for row in found]


def _found(row: asyncpg.Record) -> Found:
    if row["stored_body"] is None:
        seen = Unstored(row["generation"], bool(row["emitted"]))
        return seen, None if row["id"] is None else bundle_rows(row)
    return Stored(
        Bundle(
            body=bytes(row["stored_body"]),
            digest_sha256=row["stored_digest"],
            model_count=row["stored_model_count"],
            audit_log_count=row["stored_audit_log_count"],
        ),
        signature=row["stored_signature"],
        customer_id=row["stored_customer_id"],
    )


async def keep(
    con: asyncpg.Connection,
    tenant_id: str,
    decision_id: str,
    key: str,
    *,
    bundle: Bundle,
    signature: str,
    seen: Unstored,
) -> bool:
    """Store a bundle built from rows read after `seen` was; False when a write
    that could change it committed since (or is in flight): nothing kept."""
    return bool(
        await con.fetchval(
            KEEP_SQL,
            *_keep_args(tenant_id, decision_id, key, bundle, signature=signature, seen=seen),
        )
    )


async def keep_many(
    con: asyncpg.Connection,
    tenant_id: str,
    key: str,
    bundles: Sequence[tuple[str, Bundle, str, Unstored]],
) -> None:
    """`keep` of (decision id, bundle, signature, seen) each, in one round trip
    inside the caller's transaction (asyncpg pipelines executemany)."""
    await con.executemany(
        KEEP_SQL,
        [
            _keep_args(tenant_id, decision_id, key, bundle, signature=signature, seen=seen)
            for decision_id, bundle, signature, seen in bundles
        ],
    )


def _keep_args(
    tenant_id: str, decision_id: str, key: str, bundle: Bundle, *, signature: str, seen: Unstored
) -> tuple[object, ...]:
    """KEEP_SQL's arguments, in its order."""
    return (
        tenant_id,
        decision_id,
        key,
        bundle.body,
        bundle.digest_sha256,
        signature,
        bundle.model_count,
        bundle.audit_log_count,
        seen.generation,
    )
