"""The audit transparency log, server side (docs/AUDIT.md): integration, checkpoints, proofs.

Each tenant's audit rows are the leaves of an RFC 9162 tree (leaf index = seq - 1;
the leaf is `kaireon_client.tlog.leaf.AuditLeaf`). The `Integrator` (one task per
process, one integrator per tenant at a time through an advisory lock) reads the
leaf hashes of the rows appended since the tree's size (made by their append,
migration 0242; rebuilt from the row for older rows), stores them and every
perfect subtree hash they complete, extends the persisted compact range
(O(new rows)) and publishes a checkpoint, signed with KAIREON_LOG_KEY when one is configured.
Before it signs, it checks that the persisted tree is the one it last signed
(same size, same root, a valid signature of its own key): a database rewritten
underneath makes it stop and log an alert instead of signing.

Proofs read stored subtree hashes only (a few dozen rows), never the audit rows.
Verification re-hashes rows and compares them with the signed checkpoints:
incrementally from where it last stopped, over a range on request, or in full
as a stream with progress. Hashing runs in a worker thread, or for a long
range in a child process (audit/offload.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from kaireon_client.tlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    origin_for_tenant,
    parse_checkpoint,
    tenant_log_signer,
)
from kaireon_client.tlog.cosignature import CosignatureVerifier, parse_cosignature_vkey
from kaireon_client.tlog.leaf import AuditLeaf
from kaireon_client.tlog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    encode_hash,
    inclusion_proof,
    node_hash,
    verify_consistency,
)
from kaireon_client.tlog.note import (
    Ed25519Verifier,
    NoteError,
    Signature,
    format_note,
    parse_note,
    parse_signature_line,
    sign_note,
    verify_note,
)
from kaireon_client.tlog.proof import TlogProof, format_tlog_proof
from kaireon_client.tlog.verify import EXPORT_FORMAT
from kaireon_server.audit import tlog_repository as repo
from kaireon_server.audit.offload import Hasher
from kaireon_server.platform.audit_chain import (
    ChainVerifier,
    VerifyResult,
    normalise_db_row,
    plaintext_matches,
)
from kaireon_server.platform.canonical import format_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.env import ConfigurationError, EnvReader
from kaireon_server.platform.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from kaireon_server.platform.observability import metrics
from kaireon_server.platform.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_LOG_NAME = "kaireon.local"
# Rows per integration transaction.
BATCH_ROWS = 5000
# Rows per verification chunk: what the event loop decodes (and, for a long range,
# hands to the child process) between two awaits; 1000 keeps that stall short.
VERIFY_ROWS = 1000
MAX_EXPORT_ENTRIES = 10_000
MAX_RANGE_ROWS = 100_000
NOTIFY_CHANNEL = "kaireon_audit_appended"
# How long a woken integrator lets appends gather before one checkpoint covers
# them: an integration costs about ten round trips and a signature whatever its
# row count, so under load the delay is what amortises it (at 100 audited calls
# a second, 0.1 s put a tenth of the server's CPU into integration).
# Tessera's default batch age is the same 250 ms.
WAKE_DELAY = 0.25
# Tenants per page of the integrator's round; seconds before a refused tree is re-checked.
PENDING_PAGE = 100
REFUSED_RETRY = 60.0
# Seconds an erasure waits for its row's checkpoint: a row is checkpointed WAKE_DELAY
# after its NOTIFY plus a round, up to twice that under a steady load (a round
# leaves rows that arrive during it to the next).
DEFAULT_PROOF_WAIT = 2.0
PROOF_POLL = 0.05


# --- settings --------------------------------------------------------------------


@dataclass(frozen=True)
class TlogSettings:
    log_name: str = DEFAULT_LOG_NAME
    log_key: Ed25519PrivateKey | None = field(default=None, repr=False)
    witnesses: tuple[CosignatureVerifier, ...] = ()
    quorum: int = 0
    # Seconds between polls when no notification came (a missed NOTIFY, another cluster).
    interval: float = 5.0
    enabled: bool = True
    # How long an erasure waits for its audit row's checkpoint to attach the proof.
    proof_wait: float = DEFAULT_PROOF_WAIT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlogSettings:
        reader = EnvReader(env)
        log_name = reader.text("KAIREON_LOG_NAME", DEFAULT_LOG_NAME)
        try:
            origin_for_tenant(log_name, "t")
        except CheckpointError as exc:
            raise ConfigurationError(f"KAIREON_LOG_NAME: {exc}") from None
        key = _load_log_key(reader.secret("KAIREON_LOG_KEY"))
        witnesses: list[CosignatureVerifier] = []
        for vkey in (reader.raw("KAIREON_WITNESS_KEYS") or "").replace(",", "\n").split("\n"):
            if vkey.strip():
                try:
                    witnesses.append(parse_cosignature_vkey(vkey.strip()))
                except NoteError as exc:
                    raise ConfigurationError(f"KAIREON_WITNESS_KEYS: {exc}") from None
        if len({w.name for w in witnesses}) != len(witnesses):
            raise ConfigurationError("KAIREON_WITNESS_KEYS: one key per witness name")
        quorum = reader.integer(
            "KAIREON_WITNESS_QUORUM", len(witnesses), minimum=0, maximum=len(witnesses)
        )
        return cls(
            log_name=log_name,
            log_key=key,
            witnesses=tuple(witnesses),
            quorum=quorum,
            interval=reader.number("KAIREON_TLOG_INTERVAL", 5.0, minimum=0.01, maximum=600),
            enabled=reader.boolean("KAIREON_TLOG_INTEGRATOR", True),
            proof_wait=reader.number(
                "KAIREON_EVIDENCE_PROOF_WAIT", DEFAULT_PROOF_WAIT, minimum=0, maximum=30
            ),
        )


def log_key_fingerprint(key: Ed25519PrivateKey | None) -> str:
    """sha256 (first 16 hex digits) of the raw public key; "" without a key. For logs."""
    if key is None:
        return ""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _load_log_key(value: str | None) -> Ed25519PrivateKey | None:
    """KAIREON_LOG_KEY: Ed25519 PKCS#8 PEM text, or a path to it."""
    if value is None:
        return None
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"KAIREON_LOG_KEY: cannot read key file ({exc.strerror})"
            ) from None
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigurationError("KAIREON_LOG_KEY: not an unencrypted PKCS#8 PEM key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("KAIREON_LOG_KEY: the log key must be Ed25519")
    return key


# --- leaves and stored subtrees -----------------------------------------------------


def leaf_of(rec: Mapping[str, Any]) -> AuditLeaf:
    """The leaf of one audit row as read by `tlog_repository.LEAF_COLUMNS`."""
    return AuditLeaf.from_row(
        {
            "tenantId": rec["tenant_id"],
            "seq": rec["seq"],
            "id": str(rec["id"]),
            "action": rec["action"],
            "entityType": rec["entity_type"],
            "entityId": rec["entity_id"],
            "entityIdDigest": rec["entity_id_digest"],
            "subjectIdDigest": rec["subject_id_digest"],
            "actor": rec["actor"],
            "changes": rec["changes"] or {},
            "personalDigests": rec["personal_digests"] or {},
            "timestamp": format_timestamp(rec["created_at"]),
        }
    )


def perfect_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as aligned perfect subtrees (level, idx), left to right."""
    blocks: list[tuple[int, int]] = []
    while start < end:
        size = start & -start if start else 1 << ((end - start).bit_length() - 1)
        while start + size > end:
            size >>= 1
        level = size.bit_length() - 1
        blocks.append((level, start >> level))
        start += size
    return blocks


def _fold(hashes: Sequence[bytes]) -> bytes:
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


class _Recorder:
    """A NodeSource that notes which ranges a proof needs (first pass)."""

    def __init__(self) -> None:
        self.keys: set[tuple[int, int]] = set()

    def range_hash(self, start: int, end: int) -> bytes:
        self.keys.update(perfect_blocks(start, end))
        return bytes(32)


@dataclass
class _StoredNodes:
    nodes: dict[tuple[int, int], bytes]

    def range_hash(self, start: int, end: int) -> bytes:
        try:
            return _fold([self.nodes[k] for k in perfect_blocks(start, end)])
        except KeyError as exc:
            raise DataLoss(f"the stored tree lacks node {exc.args[0]}") from None


def extend(
    compact: CompactRange, leaves: Sequence[bytes]
) -> tuple[CompactRange, list[tuple[int, int, bytes]]]:
    """Append leaf hashes; return the new range and every node completed (level, idx, hash)."""
    size, hashes = compact.size, list(compact.hashes)
    nodes: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        h, s, level = leaf, size, 0
        nodes.append((0, size, leaf))
        while s & 1:
            h = node_hash(hashes.pop(), h)
            s >>= 1
            level += 1
            nodes.append((level, s, h))
        hashes.append(h)
        size += 1
    return CompactRange(size, hashes), nodes


# --- integration ------------------------------------------------------------------


class TreeIntegrityError(Exception):
    """The persisted tree is not the one this log last signed: do not sign."""


@dataclass
class Integrator:
    db: Database
    settings: TlogSettings
    # The last (size, root) this process published per tenant: a rollback of the
    # tables under it is refused too.
    _published: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Tenants whose tree was refused, and when to look at them again (monotonic).
    _refused: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        if self.settings.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-tlog-integrator")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def wake(self, _payload: str = "") -> None:
        """A tenant's chain moved (LISTEN kaireon_audit_appended), or the listener reconnected."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.interval):
                    await self._wake.wait()
                # Let the rows of concurrent appends arrive: one checkpoint for them all.
                await asyncio.sleep(WAKE_DELAY)
            self._wake.clear()
            try:
                await self.integrate_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit log integration failed; retrying")

    async def integrate_pending(self) -> None:
        """One round over every tenant with rows no checkpoint covers, page by page.

        A tenant whose tree the integrator refuses to sign is set aside for
        REFUSED_RETRY seconds (and logged once per refusal), so neither its
        error nor any number of such tenants holds the others back; the
        checkpoint-lag gauge keeps reporting its uncovered rows meanwhile.
        """
        after = ""
        while True:
            async with self.db.connection() as con:
                tenants = await repo.pending_tenants(con, after, PENDING_PAGE)
            for tenant in tenants:
                if self._refused.get(tenant, 0.0) > time.monotonic():
                    continue
                try:
                    await self.integrate(tenant)
                    self._refused.pop(tenant, None)
                except TreeIntegrityError as exc:
                    log.error(
                        "audit log: refusing to sign a checkpoint for tenant %s: %s", tenant, exc
                    )
                    self._refused[tenant] = time.monotonic() + REFUSED_RETRY
            if len(tenants) < PENDING_PAGE:
                return
            after = tenants[-1]

    async def integrate(self, tenant_id: str) -> int:
        """Integrate the tenant's rows pending when called; return the rows integrated.

        A batch short of BATCH_ROWS read every row there was: rows appended since
        wait for the next round (their NOTIFY wakes it). Chasing them at once
        signed a checkpoint of a few rows every few milliseconds under a steady
        load, ten round trips and a signature each, instead of one per WAKE_DELAY.
        """
        total = 0
        while True:
            n = await self._integrate_batch(tenant_id)
            total += max(n, 0)
            if n < BATCH_ROWS:
                return total

    def _verifier(self, tenant_id: str) -> Ed25519Verifier | None:
        if self.settings.log_key is None:
            return None
        return tenant_log_signer(
            self.settings.log_key, self.settings.log_name, tenant_id
        ).verifier()

    async def _integrate_batch(self, tenant_id: str) -> int:
        async with self.db.transaction(tenant_id) as con:
            if not await repo.try_lock_tenant(con, tenant_id):
                return 0  # another process is integrating this tenant
            state = await repo.load_state(con, tenant_id)
            compact = CompactRange() if state is None else CompactRange.from_json(state)
            last = await repo.latest_checkpoint(con, tenant_id)
            self._check_tree(tenant_id, compact, last)
            rows = await repo.appended_leaves(con, tenant_id, compact.size, BATCH_ROWS)
            if not rows:
                return 0
            for i, rec in enumerate(rows):
                if int(rec["seq"]) != compact.size + i + 1:
                    # What was read, for whoever looks into it: the tree's size,
                    # the seq found where the next was expected (no row content).
                    raise TreeIntegrityError(
                        f"tenant rows are not contiguous at seq {compact.size + i + 1} "
                        f"(tree size {compact.size}, read seq {int(rec['seq'])} of "
                        f"{len(rows)} rows from {int(rows[0]['seq'])})"
                    )
            # Rows appended before migration 0242 carry no leaf hash: made here.
            older = [int(r["seq"]) for r in rows if r["leaf_hash"] is None]
            rebuilt = (
                {int(r["seq"]): r for r in await repo.rows_at(con, tenant_id, older)}
                if older
                else {}
            )
            new, nodes = await asyncio.to_thread(
                lambda: extend(
                    compact,
                    [
                        bytes(r["leaf_hash"])
                        if r["leaf_hash"] is not None
                        else leaf_of(rebuilt[int(r["seq"])]).leaf_hash()
                        for r in rows
                    ],
                )
            )
            await repo.insert_nodes(con, tenant_id, nodes)
            await repo.save_state(con, tenant_id, new.size, new.to_json())
            note, signed = checkpoint_note(self.settings, tenant_id, new.size, new.root())
            await repo.insert_checkpoint(
                con, tenant_id, new.size, new.root(), note=note, signed=signed
            )
        self._published[tenant_id] = (new.size, new.root())
        # The checkpoint lag metric is sampled from the tables (observability/sampler.py).
        return len(rows)

    def _check_tree(
        self, tenant_id: str, compact: CompactRange, last: asyncpg.Record | None
    ) -> None:
        """The persisted tree must be the last checkpoint's, signed by our key."""
        size, root = compact.size, compact.root()
        if last is None:
            if size:
                raise TreeIntegrityError(f"a tree of size {size} with no checkpoint")
        else:
            if int(last["size"]) != size or bytes(last["root_hash"]) != root:
                raise TreeIntegrityError(
                    f"the stored tree (size {size}) is not the last checkpoint's "
                    f"(size {last['size']})"
                )
            verifier = self._verifier(tenant_id)
            if verifier is not None and last["signed"]:
                try:
                    note = parse_note(last["note"])
                    verify_note(note, [verifier])
                    cp = parse_checkpoint(note.text)
                except (NoteError, CheckpointError) as exc:
                    raise TreeIntegrityError(
                        f"the last checkpoint does not verify: {exc}"
                    ) from None
                if cp.size != size or cp.root_hash != root:
                    raise TreeIntegrityError("the last signed checkpoint is not the stored one")
        published = self._published.get(tenant_id)
        if published is not None and published[0] > size:
            raise TreeIntegrityError(
                f"the stored tree (size {size}) is behind what this process signed "
                f"(size {published[0]})"
            )


def checkpoint_note(
    settings: TlogSettings, tenant_id: str, size: int, root: bytes
) -> tuple[str, bool]:
    """The checkpoint's signed note, or its bare body when the log has no key."""
    origin = origin_for_tenant(settings.log_name, tenant_id)
    body = Checkpoint(origin, size, root).body()
    if settings.log_key is None:
        return body, False
    signer = tenant_log_signer(settings.log_key, settings.log_name, tenant_id)
    return format_note(sign_note(body, [signer])).decode(), True


# --- reading: checkpoints and proofs -----------------------------------------------


@dataclass(frozen=True)
class CheckpointView:
    origin: str
    size: int
    root_hash: bytes
    # The signed note with the log signature and every stored cosignature; the
    # bare checkpoint body when the log has no key (`signed` false).
    note: str
    signed: bool
    cosignatures: tuple[str, ...]
    log_vkey: str


def _with_cosignatures(note: str, lines: Sequence[str]) -> str:
    if not lines:
        return note
    parsed = parse_note(note)
    extra = [parse_signature_line(line) for line in lines]
    return format_note(type(parsed)(parsed.text, (*parsed.signatures, *extra))).decode()


async def _view(
    con: asyncpg.Connection, settings: TlogSettings, tenant_id: str, row: asyncpg.Record
) -> CheckpointView:
    size = int(row["size"])
    lines = await repo.cosignatures(con, tenant_id, size) if row["signed"] else []
    vkey = ""
    if settings.log_key is not None:
        vkey = tenant_log_signer(settings.log_key, settings.log_name, tenant_id).vkey()
    return CheckpointView(
        origin=origin_for_tenant(settings.log_name, tenant_id),
        size=size,
        root_hash=bytes(row["root_hash"]),
        note=_with_cosignatures(str(row["note"]), lines),
        signed=bool(row["signed"]),
        cosignatures=tuple(lines),
        log_vkey=vkey,
    )


async def _checkpoint_row(con: asyncpg.Connection, tenant_id: str, size: int) -> asyncpg.Record:
    """The checkpoint of `size` (0: the latest)."""
    if size < 0:
        raise InvalidArgument.field("tree_size", "must not be negative")
    row = (
        await repo.latest_checkpoint(con, tenant_id)
        if size == 0
        else await repo.checkpoint_at(con, tenant_id, size)
    )
    if row is None:
        if size == 0:
            raise NotFound("no checkpoint yet: the tenant's log is empty", reason="NO_CHECKPOINT")
        raise NotFound(f"no checkpoint of tree size {size}", reason="NO_CHECKPOINT")
    return row


async def get_checkpoint(
    db: Database, settings: TlogSettings, *, tenant_id: str, tree_size: int = 0
) -> CheckpointView:
    """The checkpoint of `tree_size`, or the latest; before the first integration
    the latest is the empty tree's (signed now, not stored: nothing to cosign)."""
    async with db.transaction(tenant_id, readonly=True) as con:
        if tree_size == 0 and await repo.latest_checkpoint(con, tenant_id) is None:
            return _empty_view(settings, tenant_id)
        return await _view(
            con, settings, tenant_id, await _checkpoint_row(con, tenant_id, tree_size)
        )


def _empty_view(settings: TlogSettings, tenant_id: str) -> CheckpointView:
    note, signed = checkpoint_note(settings, tenant_id, 0, EMPTY_ROOT)
    vkey = ""
    if settings.log_key is not None:
        vkey = tenant_log_signer(settings.log_key, settings.log_name, tenant_id).vkey()
    return CheckpointView(
        origin_for_tenant(settings.log_name, tenant_id), 0, EMPTY_ROOT, note, signed, (), vkey
    )


async def _proof_nodes(con: asyncpg.Connection, tenant_id: str, build: Any) -> list[list[bytes]]:
    """Run proof generation `build(source)` twice: once to learn the nodes, once for real."""
    recorder = _Recorder()
    build(recorder)
    nodes = await repo.fetch_nodes(con, tenant_id, sorted(recorder.keys))
    result: list[list[bytes]] = build(_StoredNodes(nodes))
    return result


@dataclass(frozen=True)
class InclusionView:
    index: int
    tree_size: int
    hashes: tuple[bytes, ...]
    leaf: AuditLeaf
    checkpoint: CheckpointView


async def get_inclusion_proof(
    db: Database,
    settings: TlogSettings,
    *,
    tenant_id: str,
    index: int | None,
    event_id: str | None,
    tree_size: int,
) -> InclusionView:
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        cp_row = await _checkpoint_row(con, tenant_id, tree_size)
        size = int(cp_row["size"])
        rec = await _leaf_row(con, tenant_id, index=index, event_id=event_id)
        seq = int(rec["seq"])
        if seq > size:
            raise FailedPrecondition(
                f"entry {seq - 1} is not in the tree of size {size} yet",
                reason="NOT_YET_INTEGRATED",
            )
        [hashes] = await _proof_nodes(
            con, tenant_id, lambda src: [inclusion_proof(src, seq - 1, size)]
        )
        view = await _view(con, settings, tenant_id, cp_row)
    return InclusionView(seq - 1, size, tuple(hashes), leaf_of(rec), view)


def evidence_proof(proof: InclusionView) -> str:
    """The C2SP tlog-proof of one row with its leaf in `extra` (docs/AUDIT.md, "Evidence
    carries proofs"): alone it proves the row to anyone pinning the log key; "" when
    the log is unsigned (nothing to pin)."""
    if not proof.checkpoint.signed:
        return ""
    return format_tlog_proof(
        TlogProof(proof.index, proof.hashes, proof.checkpoint.note, proof.leaf.canonical())
    )


@dataclass(frozen=True)
class EvidenceProof:
    """An artefact's proof: the text, or pending (not checkpointed yet: fetch it later
    with GetInclusionProof by event id). Neither when the log is unsigned."""

    text: str
    pending: bool


async def evidence_proof_of(
    db: Database, settings: TlogSettings, *, tenant_id: str, event_id: str, wait: float = 0.0
) -> EvidenceProof:
    """The evidence proof of a committed row, waiting up to `wait` seconds for the
    integrator to checkpoint it (polling: the integrator may run in another process)."""
    if settings.log_key is None:
        return EvidenceProof("", pending=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, wait)
    while True:
        try:
            proof = await get_inclusion_proof(
                db, settings, tenant_id=tenant_id, index=None, event_id=event_id, tree_size=0
            )
            if proof.checkpoint.signed:
                return EvidenceProof(evidence_proof(proof), pending=False)
        except (FailedPrecondition, NotFound) as exc:
            if exc.reason == "EVENT_NOT_FOUND":
                raise
        remaining = deadline - loop.time()
        if remaining <= 0:
            return EvidenceProof("", pending=True)
        await asyncio.sleep(min(PROOF_POLL, remaining))


_EVENT_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def check_event_id(value: str) -> str:
    """An audit event id: the dashed hex spelling of a UUID only."""
    if not _EVENT_ID.fullmatch(value):
        raise InvalidArgument.field("event_id", "must be a UUID (dashed hex)")
    return value.lower()


async def _leaf_row(
    con: asyncpg.Connection, tenant_id: str, *, index: int | None, event_id: str | None
) -> asyncpg.Record:
    if event_id is not None:
        rec = await con.fetchrow(
            f"SELECT {repo.LEAF_COLUMNS} FROM audit_log WHERE tenant_id = $1 AND id = $2",  # noqa: S608
            tenant_id,
            uuid.UUID(event_id),
        )
        if rec is None:
            raise NotFound("no such audit event", reason="EVENT_NOT_FOUND")
        return rec
    assert index is not None
    rows = await repo.rows_from(con, tenant_id, index, 1)
    if not rows or int(rows[0]["seq"]) != index + 1:
        raise NotFound(f"no audit entry at index {index}", reason="EVENT_NOT_FOUND")
    return rows[0]


async def get_consistency_proof(
    db: Database, *, tenant_id: str, first_size: int, second_size: int
) -> list[bytes]:
    if first_size < 0 or second_size < 0:
        raise InvalidArgument.field("first_size", "tree sizes are not negative")
    if first_size > second_size:
        raise InvalidArgument.field("first_size", "must not exceed second_size")
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        for size in (first_size, second_size):
            if size and await repo.checkpoint_at(con, tenant_id, size) is None:
                raise NotFound(f"no checkpoint of tree size {size}", reason="NO_CHECKPOINT")
        if first_size in (0, second_size):
            return []
        [hashes] = await _proof_nodes(
            con, tenant_id, lambda src: [consistency_proof(src, first_size, second_size)]
        )
        return hashes


@dataclass(frozen=True)
class ExportView:
    document: dict[str, Any]
    start: int
    end: int
    tree_size: int


async def export_entries(
    db: Database,
    settings: TlogSettings,
    *,
    tenant_id: str,
    start: int,
    end: int,
    tree_size: int,
) -> ExportView:
    """Leaves [start, end) with inclusion proofs, as `kaireon-audit-export/v1`.

    end 0 means the checkpoint's size; at most MAX_EXPORT_ENTRIES per call (a
    shorter range then needs `kaireon verify audit --end`)."""
    if start < 0 or end < 0:
        raise InvalidArgument.field("start", "indexes are not negative")
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        cp_row = await _checkpoint_row(con, tenant_id, tree_size)
        view = await _view(con, settings, tenant_id, cp_row)
        size = view.size
        end = end or size
        if not start <= end <= size:
            raise InvalidArgument.field("end", f"the range must lie within the tree of size {size}")
        if end - start > MAX_EXPORT_ENTRIES:
            raise InvalidArgument.field(
                "end", f"at most {MAX_EXPORT_ENTRIES} entries per call", reason="RANGE_TOO_LARGE"
            )
        rows = await repo.rows_from(con, tenant_id, start, end - start)
        prefix_keys = perfect_blocks(0, start)

        def build(src: Any) -> list[list[bytes]]:
            out = [inclusion_proof(src, i, size) for i in range(start, end)]
            if isinstance(src, _Recorder):
                src.keys.update(prefix_keys)
            return out

        recorder = _Recorder()
        build(recorder)
        nodes = await repo.fetch_nodes(con, tenant_id, sorted(recorder.keys))
    proofs = await asyncio.to_thread(build, _StoredNodes(nodes))
    entries = []
    for rec, proof in zip(rows, proofs, strict=False):
        entries.append(
            {"leaf": leaf_of(rec).to_json(), "inclusionProof": [encode_hash(h) for h in proof]}
        )
    prefix = CompactRange(start, [nodes[k] for k in prefix_keys])
    document = {
        "format": EXPORT_FORMAT,
        "checkpoint": view.note,
        "start": start,
        "prefix": prefix.to_json(),
        "entries": entries,
    }
    return ExportView(document, start, start + len(entries), size)


# --- witness cosignatures -----------------------------------------------------------


async def add_cosignature(
    db: Database, settings: TlogSettings, *, tenant_id: str, tree_size: int, line: str
) -> CheckpointView:
    """Store a witness's cosignature line of a checkpoint, after verifying it."""
    try:
        signature: Signature = parse_signature_line(line.rstrip("\n"))
    except NoteError as exc:
        raise InvalidArgument.field("cosignature", str(exc)) from None
    async with db.transaction(tenant_id) as con:
        row = await _checkpoint_row(con, tenant_id, tree_size)
        if not settings.witnesses:
            raise FailedPrecondition(
                "no witness keys are configured (KAIREON_WITNESS_KEYS)", reason="NO_WITNESSES"
            )
        if not row["signed"]:
            raise FailedPrecondition("the checkpoint is not signed", reason="UNSIGNED_CHECKPOINT")
        text = parse_note(str(row["note"])).text
        witness = next(
            (
                w
                for w in settings.witnesses
                if w.name == signature.name and w.key_id == signature.key_id
            ),
            None,
        )
        if witness is None:
            raise PermissionDenied("not a configured witness key", reason="UNKNOWN_WITNESS")
        if not witness.verify(text.encode(), signature.signature):
            raise InvalidArgument.field("cosignature", "does not verify for this checkpoint")
        await repo.add_cosignature(
            con, tenant_id, int(row["size"]), witness.name, signature.line().rstrip("\n")
        )
        return await _view(con, settings, tenant_id, row)


def quorum_met(settings: TlogSettings, view: CheckpointView) -> bool:
    names = {line.split(" ")[1] for line in view.cosignatures if line.count(" ") >= 2}
    return len(names & {w.name for w in settings.witnesses}) >= settings.quorum


# --- verification -------------------------------------------------------------------


@dataclass(frozen=True)
class TlogVerifyResult:
    valid: bool
    start: int
    end: int
    tree_size: int
    rows_checked: int
    first_invalid_seq: int = 0
    first_invalid_id: str = ""
    reason: str = ""
    head_hash: str = ""


@dataclass
class _RangeCheck:
    """Feeds rows [start, end) of one chunk at a time; hashing runs in a thread."""

    tenant_id: str
    start: int
    compact: CompactRange
    chain: ChainVerifier
    failure: TlogVerifyResult | None = None
    checked: int = 0

    def feed(
        self, rows: Sequence[asyncpg.Record], stored: Mapping[int, bytes], end: int, size: int
    ) -> None:
        for rec in rows:
            if self.failure is not None:
                return
            seq = int(rec["seq"])
            index = self.compact.size
            if seq != index + 1:
                self._fail(
                    index + 1, "" if seq > index + 1 else str(rec["id"]), "sequence_gap", end, size
                )
                return
            row = normalise_db_row(rec)
            if not self.chain.feed(row):
                assert self.chain.failure is not None
                f = self.chain.failure
                self._fail(f.first_invalid_seq, f.first_invalid_id, f.reason, end, size)
                return
            h = leaf_of(rec).leaf_hash()
            if stored.get(index) != h:
                self._fail(seq, str(rec["id"]), "leaf_mismatch", end, size)
                return
            self.compact.append(h)
            self.checked += 1

    def _fail(self, seq: int, row_id: str, reason: str, end: int, size: int) -> None:
        self.failure = TlogVerifyResult(
            False, self.start, end, size, self.checked, seq, row_id, reason
        )


@dataclass(frozen=True)
class Progress:
    rows_checked: int
    position: int
    tree_size: int


async def verify_range_stream(
    db: Database,
    settings: TlogSettings,
    *,
    tenant_id: str,
    start: int | None,
    end: int,
    limit: int | None = MAX_RANGE_ROWS,
) -> AsyncIterator[Progress | TlogVerifyResult]:
    """Verify rows [start, end) against the latest checkpoint; yield progress, then the result.

    start None resumes where the last verification stopped (and records the new
    position when valid); end 0 means the checkpoint's size. Rows are re-hashed and
    compared with the leaf hashes stored at integration (naming the first row that
    differs), the chain links of the same rows are checked, and the recomputed
    tree (stored prefix + re-hashed rows) must match the signed checkpoint:
    exactly at its size, or by a consistency proof below it."""
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        cp_row = await repo.latest_checkpoint(con, tenant_id)
        if cp_row is None:
            yield TlogVerifyResult(True, 0, 0, 0, 0)
            return
        size, root = int(cp_row["size"]), bytes(cp_row["root_hash"])
        if settings.log_key is not None and cp_row["signed"]:
            verifier = tenant_log_signer(settings.log_key, settings.log_name, tenant_id).verifier()
            try:
                verify_note(parse_note(str(cp_row["note"])), [verifier])
            except NoteError:
                yield TlogVerifyResult(False, 0, 0, size, 0, 0, "", "checkpoint_signature")
                return
        resume = start is None
        first = await repo.verified_size(con, tenant_id) if start is None else start
        last = end or size
        if not 0 <= first <= last <= size:
            raise InvalidArgument.field("end", f"the range must lie within the tree of size {size}")
        if limit is not None and last - first > limit:
            if not resume:
                raise InvalidArgument.field(
                    "end", f"at most {limit} rows per call", reason="RANGE_TOO_LARGE"
                )
            last = first + limit
        prefix_keys = perfect_blocks(0, first)
        prefix_nodes = await repo.fetch_nodes(con, tenant_id, prefix_keys)
        if len(prefix_nodes) != len(prefix_keys):
            yield TlogVerifyResult(False, first, last, size, 0, first + 1, "", "tree_missing")
            return
        prev = await repo.row_hash_before(con, tenant_id, first) if first else ""
        check = _RangeCheck(
            tenant_id,
            first,
            CompactRange(first, [prefix_nodes[k] for k in prefix_keys]),
            ChainVerifier(start=(first, prev or "")),
        )
        position = first
        hasher = Hasher(last - first)
        try:
            while position < last and check.failure is None:
                count = min(VERIFY_ROWS, last - position)
                rows = await repo.rows_from(con, tenant_id, position, count)
                stored = await repo.leaf_hashes(con, tenant_id, position, position + VERIFY_ROWS)
                check = await hasher.apply(_RangeCheck.feed, check, rows, stored, last, size)
                if len(rows) < count and check.failure is None:
                    # The rows stop short of the checkpointed range: a truncated tail.
                    check._fail(position + len(rows) + 1, "", "sequence_gap", last, size)
                position += len(rows)
                yield Progress(check.checked, position, size)
        finally:
            hasher.close()
        if check.failure is not None:
            yield check.failure
            return
        computed = check.compact.root()
        ok = computed == root if last == size else False
        bad_seq, bad_id = 0, ""
        if last < size and last > 0:
            [proof] = await _proof_nodes(
                con, tenant_id, lambda src: [consistency_proof(src, last, size)]
            )
            try:
                verify_consistency(last, size, proof, computed, root)
                ok = True
            except ProofError:
                ok = False
        elif last == 0:
            ok = True
        head = await repo.row_hash_before(con, tenant_id, last) if last else ""
        if not ok:
            bad_seq, bad_id = await _locate_root_mismatch(con, settings, tenant_id, last)
    if not ok:
        yield TlogVerifyResult(
            False, first, last, size, check.checked, bad_seq, bad_id, "root_mismatch"
        )
        return
    if resume:
        async with db.transaction(tenant_id) as con:
            if await repo.verified_size(con, tenant_id) < last:
                await repo.save_verified(con, tenant_id, last)
    yield TlogVerifyResult(True, first, last, size, check.checked, head_hash=head or "")


@dataclass
class _CheckpointWalk:
    """Re-hashed rows against every stored checkpoint, in order: where the signed
    history stops matching the rows (see _locate_root_mismatch)."""

    verifier: Ed25519Verifier | None
    compact: CompactRange = field(default_factory=CompactRange)
    matched: int = 0  # size of the last checkpoint the rows still hash to
    mismatch: int = 0  # size of the first one they do not (0: none yet)

    def feed(self, rows: Sequence[asyncpg.Record], checkpoints: Sequence[asyncpg.Record]) -> None:
        pending = list(checkpoints)
        for rec in rows:
            self.compact.append(leaf_of(rec).leaf_hash())
            while pending and int(pending[0]["size"]) <= self.compact.size:
                cp = pending.pop(0)
                if int(cp["size"]) < self.compact.size or not self._authentic(cp):
                    continue  # one the walk skipped past, or not signed by the log key
                if self.compact.root() != bytes(cp["root_hash"]):
                    self.mismatch = self.compact.size
                    return
                self.matched = self.compact.size

    def _authentic(self, cp: asyncpg.Record) -> bool:
        # A row the database owner wrote cannot carry the log's signature.
        if self.verifier is None:
            return True
        if not cp["signed"]:
            return False
        try:
            verify_note(parse_note(str(cp["note"])), [self.verifier])
        except NoteError:
            return False
        return True


async def _locate_root_mismatch(
    con: asyncpg.Connection, settings: TlogSettings, tenant_id: str, upto: int
) -> tuple[int, str]:
    """After a root_mismatch (rows hash to the stored leaves, but those do not hash to
    the signed root: the stored tree was rewritten with them), the first row that may
    be bad: the one after the last stored, signed checkpoint that the re-hashed rows
    still reproduce. Exactly the bad row when the next checkpoint added one row; else
    the first of that checkpoint's batch. O(rows); run on failure only."""
    verifier = None
    if settings.log_key is not None:
        verifier = tenant_log_signer(settings.log_key, settings.log_name, tenant_id).verifier()
    walk = _CheckpointWalk(verifier)
    position = 0
    while position < upto and not walk.mismatch:
        rows = await repo.rows_from(con, tenant_id, position, min(BATCH_ROWS, upto - position))
        if not rows:
            break
        end = position + len(rows)
        checkpoints = await repo.checkpoints_between(con, tenant_id, position, end)
        await asyncio.to_thread(walk.feed, rows, checkpoints)
        position = end
    rows = await repo.rows_from(con, tenant_id, walk.matched, 1)
    if not rows:
        return walk.matched + 1, ""
    return int(rows[0]["seq"]), str(rows[0]["id"])


async def verify(
    db: Database, settings: TlogSettings, *, tenant_id: str, start: int | None, end: int
) -> tuple[TlogVerifyResult, bool]:
    """`verify_range_stream` to its result (at most MAX_RANGE_ROWS rows) and whether
    checkpointed rows remain after the range."""
    result: TlogVerifyResult | None = None
    async for item in verify_range_stream(db, settings, tenant_id=tenant_id, start=start, end=end):
        if isinstance(item, TlogVerifyResult):
            result = item
    assert result is not None
    return result, result.valid and result.end < result.tree_size


def encode_hashes(hashes: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def export_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


# --- the legacy chain, incrementally (VerifyChain) ----------------------------------------


@dataclass(frozen=True)
class ChainCheck:
    result: VerifyResult
    resumed_from_seq: int
    more: bool


def _feed_chain(verifier: ChainVerifier, rows: Sequence[asyncpg.Record]) -> None:
    for rec in rows:
        if not verifier.feed(normalise_db_row(rec), plaintext_ok=plaintext_matches(rec)):
            return


async def verify_chain_incremental(db: Database, *, tenant_id: str) -> ChainCheck:
    """The chain check from where the last valid one stopped, at most MAX_RANGE_ROWS rows.

    The row it resumes after must still carry the hash it had then; rows after it are
    checked link by link (hashing in a worker thread) up to the chain head. Edits to
    rows verified earlier are the full re-verification's job (StreamVerifyLog)."""
    async with db.transaction(tenant_id, readonly=True, isolation="repeatable_read") as con:
        head = await repo.chain_head(con, tenant_id)
        resumed, resumed_hash = await repo.chain_verified(con, tenant_id)
        if resumed > head[0]:
            resumed, resumed_hash = 0, ""  # the chain got shorter: check it all
        if resumed and await repo.row_hash_before(con, tenant_id, resumed) != resumed_hash:
            result = VerifyResult(False, resumed - 1, resumed, "", "integrity_hash_mismatch")
            metrics.AUDIT_VERIFICATIONS.labels("invalid").inc()
            return ChainCheck(result, resumed, False)
        last = min(head[0], resumed + MAX_RANGE_ROWS)
        more = last < head[0]
        verifier = ChainVerifier(
            start=(resumed, resumed_hash), expected_head=None if more else head
        )
        verifier.rows_checked = resumed
        position = resumed
        hasher = Hasher(last - resumed)
        try:
            while position < last and verifier.failure is None:
                rows = await repo.chain_rows_from(
                    con, tenant_id, position, min(VERIFY_ROWS, last - position)
                )
                if not rows:
                    break
                verifier = await hasher.apply(_feed_chain, verifier, rows)
                position = int(rows[-1]["seq"])
        finally:
            hasher.close()
        result = verifier.result()
    metrics.AUDIT_VERIFICATIONS.labels("valid" if result.valid else "invalid").inc()
    if result.valid and verifier.rows_checked > resumed:
        async with db.transaction(tenant_id) as con:
            await repo.save_chain_verified(con, tenant_id, verifier.rows_checked, result.head_hash)
    return ChainCheck(result, resumed, more and result.valid)
