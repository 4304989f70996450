"""The GetDecisionProvenance use case: read as of decision time, assemble, sign, audit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from kaireon_server.platform.audit_chain import AuditBatcher, AuditRow
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.batching import KeyedBatcher
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import InvalidArgument, NotFound
from kaireon_server.platform.observability import metrics
from kaireon_server.platform.signing import UNSIGNED, Signer
from kaireon_server.provenance import repository, stored
from kaireon_server.provenance.bundle import Bundle, audit_changes, encode_rows, sources_of
from kaireon_server.provenance.cache import BundleCache, ModelKey
from kaireon_server.provenance.model import ModelVersion, Sources
from kaireon_server.provenance.repository import BundleRows

log = logging.getLogger(__name__)

MAX_DECISION_ID_LENGTH = 256
# Concurrent emissions of a tenant read together, at most this many per statement.
READ_BATCH = 64
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


def _model_keys(tenant_id: str, rows: BundleRows) -> list[ModelKey]:
    return [(tenant_id, m[0], m[1], bytes(m[3])) for m in rows.models]


def _not_found() -> NotFound:
    # Another tenant's decision is indistinguishable from a missing one.
    return NotFound("no decision with this id", reason="DECISION_NOT_FOUND")


async def read_rows(
    db: Database, tenant_id: str, decision_id: str, cache: BundleCache
) -> tuple[BundleRows, list[ModelVersion]]:
    """Everything a bundle cites, in one snapshot (a bundle never mixes rows from
    before and after a concurrent change).

    The hot path is one round trip: one statement (kaireon_provenance_bundle sets
    the tenant for row-level security itself) on a connection that needs no
    transaction and no reset. Model states the cache has not hashed yet need a
    second read in the same snapshot: then the whole read is repeated in a
    repeatable-read transaction (once per model state and process)."""
    async with db.single_statements() as con:
        rows = await repository.read_bundle(con, tenant_id, decision_id)
    if rows is None:
        raise _not_found()
    return await _with_models(db, tenant_id, decision_id, cache, rows)


async def _with_models(
    db: Database, tenant_id: str, decision_id: str, cache: BundleCache, rows: BundleRows
) -> tuple[BundleRows, list[ModelVersion]]:
    """The rows of a one-statement read, with the model states' hashes (see read_rows)."""
    keys = _model_keys(tenant_id, rows)
    hashes = {key: cache.model_hash(key) for key in keys}
    if any(digest is None for digest in hashes.values()):
        rows, keys, hashes = await _read_with_model_states(
            db, tenant_id, decision_id, cache, hashes
        )
    models = [
        # The bundle carries the hash of the state, not the state (it may be large).
        ModelVersion(model_id, version, model_type, str(hashes[key]), valid_from)
        for (model_id, version, model_type, _, valid_from), key in zip(
            rows.models, keys, strict=True
        )
    ]
    return rows, models


async def _read_with_model_states(
    db: Database,
    tenant_id: str,
    decision_id: str,
    cache: BundleCache,
    looked_up: dict[ModelKey, str | None],
) -> tuple[BundleRows, list[ModelKey], dict[ModelKey, str | None]]:
    """The cold path: the statement and the missing model states in one snapshot.
    (Keys the hot path looked up already are not looked up again: the cache's
    hit/miss counts stay one per model and bundle.)"""
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        rows = await repository.read_bundle(con, tenant_id, decision_id)
        if rows is None:
            raise _not_found()
        keys = _model_keys(tenant_id, rows)
        hashes = {
            key: looked_up[key] if key in looked_up else cache.model_hash(key) for key in keys
        }
        missing = [key for key, digest in hashes.items() if digest is None]
        if missing:
            states = await repository.model_states(con, tenant_id, [k[1:3] for k in missing])
            for key in missing:
                hashes[key] = cache.put_model_state(key, states[key[3]])
    return rows, keys, hashes


async def read_sources(
    db: Database, tenant_id: str, decision_id: str, cache: BundleCache | None = None
) -> Sources:
    """The same reads as `Sources`, the form `bundle.assemble` (the definition) takes."""
    rows, models = await read_rows(db, tenant_id, decision_id, cache or BundleCache())
    return sources_of(rows, models)


@dataclass
class ProvenanceEmitter:
    db: Database
    signer: Signer
    build: BuildEnv
    clock: Clock
    audit: AuditBatcher
    cache: BundleCache = field(default_factory=BundleCache)
    # Stored bundles of this build and signing key (stored.py).
    build_key: str = field(init=False, default="")
    # Seconds a busy tenant's next read batch waits for more calls (batching.py).
    read_linger: float = 0.0
    _reads: KeyedBatcher[str, str, stored.Found] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.build_key = stored.build_key(self.build, self.signer.key_id)
        self._reads = KeyedBatcher(self._read_batch, max_batch=READ_BATCH, linger=self.read_linger)

    async def emit(self, identity: Identity, decision_id: str) -> Emission:
        decision_id = validate_decision_id(decision_id)
        # One statement: the stored bundle, or the rows to build it from. The
        # tenant's emissions that arrive while one read is in flight share the
        # next statement: an idle tenant's read goes alone, at once.
        found = await self._reads.submit(identity.tenant_id, decision_id)
        built = await self._build(identity.tenant_id, decision_id, found)
        if built is None:
            raise _not_found()
        if built.keep is not None:
            await self._keep(identity.tenant_id, built)
        return await self._audited(identity, built)

    async def _read_batch(self, tenant_id: str, decision_ids: list[str]) -> list[stored.Found]:
        """One statement for the queued reads of a tenant (each id read once)."""
        distinct = list(dict.fromkeys(decision_ids))
        async with self.db.single_statements() as con:
            found = await stored.read_many(con, tenant_id, distinct, self.build_key)
        by_id = dict(zip(distinct, found, strict=True))
        return [by_id[decision_id] for decision_id in decision_ids]

    async def close(self) -> None:
        """Stop the read batches (at shutdown, after the server drained its calls)."""
        await self._reads.close()

    async def emit_many(
        self, identity: Identity, decision_ids: Sequence[str]
    ) -> list[Emission | None]:
        """`emit` of many (validated) decision ids: one read for them all, the
        bundles to keep kept in one transaction, each emission audited (the rows
        share the group commit's transactions); None for a missing decision."""
        return await self.audit_prepared(identity, await self.prepare_many(identity, decision_ids))

    async def prepare_many(self, identity: Identity, decision_ids: Sequence[str]) -> Prepared:
        """`emit_many` up to its audit rows: the bundles read (or built and kept)."""
        tenant_id = identity.tenant_id
        async with self.db.single_statements() as con:
            found = await stored.read_many(con, tenant_id, decision_ids, self.build_key)
        built = await asyncio.gather(
            *(self._build(tenant_id, d, f) for d, f in zip(decision_ids, found, strict=True))
        )
        await self._keep_all(tenant_id, [b for b in built if b is not None and b.keep])
        return Prepared(built)

    async def audit_prepared(self, identity: Identity, prepared: Prepared) -> list[Emission | None]:
        """The rest of `emit_many`: the emission rows committed, then the emissions."""
        built = prepared.built
        audited = iter(await self._audited_many(identity, [b for b in built if b is not None]))
        return [None if b is None else next(audited) for b in built]

    async def _build(
        self,
        tenant_id: str,
        decision_id: str,
        found: stored.Found,
    ) -> _Built | None:
        """The bundle: as stored, or built and signed; None: no such decision."""
        if isinstance(found, stored.Stored):
            return _Built(decision_id, found.bundle, found.signature, found.customer_id)
        seen, read = found
        if read is None:
            return None
        rows, models = await _with_models(self.db, tenant_id, decision_id, self.cache, read)
        bundle = encode_rows(tenant_id, rows, models, self.build, self.cache)
        return _Built(
            decision_id,
            bundle,
            self.signer.sign(bundle.body),
            rows.decision.customer_id,
            keep=seen if seen.emitted else None,
        )

    async def _audited(self, identity: Identity, built: _Built) -> Emission:
        [emission] = await self._audited_many(identity, [built])
        return emission

    async def _audited_many(self, identity: Identity, built: Sequence[_Built]) -> list[Emission]:
        metrics.PROVENANCE_BUNDLES.inc(len(built))
        # The emission rows are appended after the read snapshot, never inside it
        # (holding the tenant's chain lock during the reads would serialise every
        # emission), through the group-committing writer. No bundle is returned
        # unless its row is committed.
        now = self.clock()
        records = await self.audit.append_many(
            identity.tenant_id,
            [
                AuditRow(
                    action=repository.EMIT_ACTION,
                    entity_type=repository.DECISION_ENTITY,
                    entity_id=b.decision_id,
                    actor=identity.actor,
                    changes=audit_changes(b.bundle, signed=b.signature != UNSIGNED),
                    subject_id=b.subject,
                    now=now,
                )
                for b in built
            ],
        )
        return [
            Emission(bundle=b.bundle, signature=b.signature, audit_event_id=record.id)
            for b, record in zip(built, records, strict=True)
        ]

    async def _keep(self, tenant_id: str, built: _Built) -> None:
        """Store the bundle for the next emissions; a failure only costs them a build."""
        assert built.keep is not None
        try:
            async with self.db.single_statements() as con:
                await stored.keep(
                    con,
                    tenant_id,
                    built.decision_id,
                    self.build_key,
                    bundle=built.bundle,
                    signature=built.signature,
                    seen=built.keep,
                )
        except _KEEP_ERRORS as exc:
            log.warning("provenance bundle not stored", extra={"error_type": type(exc).__name__})

    async def _keep_all(self, tenant_id: str, built: Sequence[_Built]) -> None:
        """`_keep` of a batch in one transaction: its first keep takes the tenant's
        lock and the others find it held by their own session, where separate
        statements would refuse each other (a keep never waits)."""
        if len(built) <= 1:
            for one in built:
                await self._keep(tenant_id, one)
            return
        try:
            async with self.db.connection() as con, con.transaction():
                await stored.keep_many(
                    con,
                    tenant_id,
                    self.build_key,
                    [(b.decision_id, b.bundle, b.signature, b.keep) for b in built if b.keep],
                )
        except _KEEP_ERRORS as exc:
            log.warning("provenance bundles not stored", extra={"error_type": type(exc).__name__})


_KEEP_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Prepared:
    """Bundles ready to be audited and handed out (None: no such decision)."""

    built: list[_Built | None]


@dataclass(frozen=True, slots=True)
class _Built:
    """A bundle ready to be handed out, and what keeping it is checked against."""

    decision_id: str
    bundle: Bundle
    signature: str
    # The decision's customer: the emission's audit row names its subject.
    subject: str
    # Set when this build should be kept (the decision was emitted before).
    keep: stored.Unstored | None = None
