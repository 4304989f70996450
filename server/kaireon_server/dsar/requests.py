"""DSAR requests: create (idempotent, audited), get and list (the export inline
when small), watch (an async iterator of states), download (chunks, checked
against the export's digest).

Plain domain code: no gRPC, no protobuf. How an inline export is shown (and
how many bytes it takes in the answer) is the caller's `render` function, so
the answer-size budgets are kept without this module knowing the wire format.
Access to an export is audited without reads multiplying writes: every
download writes one row, and an export shown inline (Get, List) writes one row
the first time each principal receives it; polling writes nothing more (see
docs/DSAR.md, "Access rows").
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import asyncpg

from kaireon_server.dsar import repository
from kaireon_server.dsar.model import (
    COMPLETED,
    CreateCommand,
    DsarRecord,
    LifecycleEntry,
    audit_row,
    parse_request_id,
    validate_create,
    validate_status,
)
from kaireon_server.dsar.notify import Notifier
from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.platform.audit_chain import AuditRow, PendingAudit, append_audit_at_commit
from kaireon_server.platform.canonical import parse_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from kaireon_server.platform.observability import tracing
from kaireon_server.platform.paging import clamp_page_size, decode_token, encode_token

E = TypeVar("E")
# A stored export document -> (the export as the answer carries it, its size there).
Render = Callable[[bytes], tuple[E, int]]


@dataclass(frozen=True)
class Shown(Generic[E]):
    """A request as answered: with its export inline when it fit (and was audited)."""

    record: DsarRecord
    export: E | None = None


# The largest bigint: a watch read "after" it returns the request and no event.
_NEWEST = 2**63 - 1


def _not_found() -> NotFound:
    return NotFound("no such DSAR request", reason="DSAR_REQUEST_NOT_FOUND")


async def create_in(
    con: asyncpg.Connection,
    tenant_id: str,
    actor: str,
    cmd: CreateCommand,
    *,
    audit_changes: Mapping[str, object] | None = None,
) -> tuple[DsarRecord, bool]:
    """Queue a request in `con`'s transaction; (record, created).

    An idempotency key seen before returns its request (created False), or
    ALREADY_EXISTS if that request differs. A new request writes its
    `dsar_request_created` audit row (`audit_changes` adds to its changes).
    The row is chained when
    the transaction commits (`append_audit_at_commit`): no lock on the
    tenant's audit chain is held across the caller's round trips.
    """
    # The calling span's trace context (no personal value): the export job joins it.
    record, created = await repository.insert_request(
        con, tenant_id, cmd, actor, tracing.current_carrier()
    )
    if not created:
        _check_same(record, cmd)
        return record, False
    await append_audit_at_commit(con, tenant_id, _created_row(record.id, cmd, actor, audit_changes))
    return record, True


def _check_same(record: DsarRecord, cmd: CreateCommand) -> None:
    """An idempotency key names one request: another request under it is refused."""
    same = (record.request_type, record.subject_id, record.encrypt) == (
        cmd.request_type,
        cmd.subject_id,
        cmd.encrypt,
    )
    if not same:
        raise AlreadyExists(
            "idempotency_key was already used for a different request",
            reason="IDEMPOTENCY_KEY_REUSED",
        )


def _created_row(
    request_id: uuid.UUID, cmd: CreateCommand, actor: str, extra: Mapping[str, object] | None
) -> AuditRow:
    return audit_row(
        "dsar_request_created",
        request_id,
        cmd.subject_id,
        actor,
        {"requestType": cmd.request_type, "encrypt": cmd.encrypt, **(extra or {})},
    )


async def _audit_read(con: asyncpg.Connection, record: DsarRecord, actor: str, via: str) -> None:
    """One access row: the export went to `actor` (`via` download or inline)."""
    await append_audit_at_commit(
        con,
        record.tenant_id,
        audit_row(
            repository.ACTION_EXPORT_ACCESSED,
            record.id,
            record.subject_id,
            actor,
            {"via": via, "sizeBytes": record.export_size or 0},
        ),
    )


def _decode_position(token: str) -> tuple[datetime, uuid.UUID] | None:
    position = decode_token(token)
    if not position:
        return None
    try:
        return parse_timestamp(str(position["c"])), uuid.UUID(str(position["i"]))
    except (KeyError, ValueError):
        raise InvalidArgument.field("page_token", "malformed page token") from None


class DsarRequests:
    """The request use cases of one process (the workers are dsar/worker.py)."""

    def __init__(self, db: Database, settings: DsarSettings, notifier: Notifier) -> None:
        self._db = db
        self._settings = settings
        self._notifier = notifier

    async def create(
        self,
        *,
        tenant_id: str,
        actor: str,
        request_type: str,
        subject_id: str,
        encrypt: bool,
        idempotency_key: str,
        lifecycle: LifecycleEntry,
    ) -> DsarRecord:
        """Queue a request, and for a new one its `lifecycle` row and audit row:
        one statement, its own transaction."""
        cmd = validate_create(request_type, subject_id, encrypt, idempotency_key)
        if cmd.encrypt and self._settings.keyring is None:
            raise FailedPrecondition(
                "encryption was requested but this deployment has no encryption keys",
                reason="ENCRYPTION_NOT_CONFIGURED",
            )
        request_id = uuid.uuid4()
        audit = PendingAudit.of(tenant_id, [_created_row(request_id, cmd, actor, None)])
        async with self._db.single_statements() as con:
            record, created = await repository.insert_request_alone(
                con,
                tenant_id,
                request_id,
                cmd,
                actor=actor,
                origin=tracing.current_carrier(),
                audit=audit,
                lifecycle=lifecycle,
            )
        if created:
            return record
        _check_same(record, cmd)
        # The key's earlier request, as stored now (with its export's availability).
        async with self._db.transaction(tenant_id, readonly=True) as con:
            stored = await repository.get_request(con, tenant_id, record.id)
        return stored or record  # gone meanwhile (erased): as the statement saw it

    async def _attach(
        self,
        con: asyncpg.Connection,
        record: DsarRecord,
        actor: str,
        budget: int,
        render: Render[E],
        *,
        disclosed: set[uuid.UUID],
    ) -> tuple[Shown[E], int]:
        """The request, with its export inline when small enough and within
        `budget`; and the bytes of the budget that took. `disclosed`: the
        requests whose export `actor` already received inline (updated)."""
        if (
            record.status == COMPLETED
            and record.export_available
            and (record.export_size or 0) <= min(self._settings.inline_limit_bytes, budget)
        ):
            document = await repository.read_document(con, record)
            if document is not None:
                exported, size = render(document)
                if size <= budget:
                    await self._record_inline(con, record, actor, disclosed)
                    return Shown(record, exported), size
        return Shown(record), 0

    async def _record_inline(
        self,
        con: asyncpg.Connection,
        record: DsarRecord,
        actor: str,
        disclosed: set[uuid.UUID],
    ) -> None:
        """The first inline disclosure of an export to a principal is an access
        row; showing the same bytes to the same principal again is not."""
        if record.id not in disclosed:
            await _audit_read(con, record, actor, "inline")
            disclosed.add(record.id)

    @staticmethod
    async def _disclosed(
        con: asyncpg.Connection, tenant_id: str, actor: str, records: list[DsarRecord]
    ) -> set[uuid.UUID]:
        """Which of the records' exports `actor` already received inline. The
        others are locked first (concurrent polls then record each once), in
        one order, so that two polls cannot deadlock. (Their access rows are
        chained at commit: no chain lock is held while these are taken.)"""
        candidates = [r.id for r in records if r.status == COMPLETED and r.export_available]
        seen = await repository.inline_disclosed(con, tenant_id, actor, candidates)
        fresh = sorted((i for i in candidates if i not in seen), key=str)
        if not fresh:
            return seen
        for request_id in fresh:
            await repository.lock_inline_disclosure(con, tenant_id, request_id, actor)
        # Look again under the locks: a concurrent poll may have just recorded some.
        return await repository.inline_disclosed(con, tenant_id, actor, candidates)

    async def get(
        self, *, tenant_id: str, actor: str, request_id: str, render: Render[E]
    ) -> Shown[E]:
        rid = parse_request_id(request_id)
        async with self._db.transaction(tenant_id) as con:
            record = await repository.get_request(con, tenant_id, rid)
            if record is None:
                raise _not_found()
            disclosed = await self._disclosed(con, tenant_id, actor, [record])
            shown, _ = await self._attach(
                con,
                record,
                actor,
                self._settings.list_inline_budget_bytes,
                render,
                disclosed=disclosed,
            )
        return shown

    async def list_requests(
        self,
        *,
        tenant_id: str,
        actor: str,
        status: str,
        subject_id: str,
        page_size: int,
        page_token: str,
        render: Render[E],
    ) -> tuple[list[Shown[E]], str]:
        """One page (newest first) and the next page's token ("" after the last)."""
        wanted = validate_status(status)
        limit = clamp_page_size(page_size, default=50, maximum=500)
        after = _decode_position(page_token)
        async with self._db.transaction(tenant_id) as con:
            records = await repository.list_requests(
                con,
                tenant_id,
                status=wanted,
                subject_id=subject_id or None,
                after=after,
                limit=limit + 1,
            )
            page, more = records[:limit], len(records) > limit
            # Inline exports share one answer-size budget across the page.
            budget = self._settings.list_inline_budget_bytes
            # One lookup for the page: a repeated poll writes nothing.
            disclosed = await self._disclosed(con, tenant_id, actor, page)
            shown = []
            for record in page:
                item, used = await self._attach(
                    con, record, actor, budget, render, disclosed=disclosed
                )
                budget -= used
                shown.append(item)
        token = ""
        if more:
            last = page[-1]
            token = encode_token({"c": last.created_at.isoformat(), "i": str(last.id)})
        return shown, token

    async def watch(
        self, *, tenant_id: str, request_id: str, after_version: int
    ) -> AsyncIterator[DsarRecord]:
        """The request's states after `after_version` (0: its current state first),
        until it is completed or failed."""
        rid = parse_request_id(request_id)
        if after_version < 0:
            raise InvalidArgument.field("after_version", "must not be negative")
        with self._notifier.subscribe(tenant_id, str(rid)) as subscription:
            # Subscribed before the first read: no change can slip in between.
            last = after_version
            while True:
                # From 0: the current state alone (no version is after the largest).
                since = last or _NEWEST
                async with self._db.single_statements() as con:
                    record, events = await repository.watch_read(con, tenant_id, rid, since)
                if record is None:  # no such request here, or deleted meanwhile
                    raise _not_found()
                if last == 0:
                    yield record
                    last = record.version
                for event in events:
                    state = record.at_event(event)
                    yield state
                    last = state.version
                    if state.terminal:
                        return
                if record.terminal and last >= record.version:
                    return
                # Caught up with the version read: the next change is notified (the
                # subscription predates the read), so wait for it rather than read
                # again at once, which cost every watch a read per state it saw.
                if not events or last >= record.version:
                    await subscription.wait(self._settings.poll_seconds, seen=last)

    async def open_export(self, *, tenant_id: str, actor: str, request_id: str) -> DsarRecord:
        """A completed request whose export may be downloaded; the download is audited."""
        rid = parse_request_id(request_id)
        async with self._db.transaction(tenant_id) as con:
            record = await repository.get_request(con, tenant_id, rid)
            if record is None:
                raise _not_found()
            if record.status != COMPLETED:
                raise FailedPrecondition(
                    f"the export is not ready (status {record.status})", reason="EXPORT_NOT_READY"
                )
            if not record.export_available:
                raise FailedPrecondition(
                    "the stored export was deleted by an erasure request", reason="EXPORT_ERASED"
                )
            await _audit_read(con, record, actor, "download")
        return record

    async def export_chunks(self, record: DsarRecord) -> AsyncIterator[bytes]:
        """The stored export of an opened request, chunk by chunk; DATA_LOSS if a
        chunk vanished (erased meanwhile) or the whole does not match its digest."""
        digest = hashlib.sha256()
        assert record.export_attempt is not None
        # One short transaction per chunk: a slow reader holds no connection.
        for seq in range(record.export_chunks or 0):
            async with self._db.transaction(record.tenant_id, readonly=True) as con:
                data = await repository.read_chunk(
                    con, record.tenant_id, record.id, record.export_attempt, seq
                )
            if data is None:
                raise DataLoss("the export was deleted during the download", reason="EXPORT_ERASED")
            digest.update(data)
            yield data
        if digest.hexdigest() != record.export_digest:
            raise DataLoss("the stored export does not match its digest", reason="EXPORT_CORRUPT")
