"""DsarService handlers and the capability that runs the export workers.

Roles (the protos declare them): every method needs `operator`; viewers get
PERMISSION_DENIED because every answer names a data subject or carries their
data. Reads of an export — attached inline or downloaded — write an audit row.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import grpc
from google.api import httpbody_pb2
from google.protobuf.descriptor import ServiceDescriptor

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon_server.capability import ServiceContext
from kaireon_server.dsar import repository
from kaireon_server.dsar.convert import export_message, request_message
from kaireon_server.dsar.jobs import JobDeps
from kaireon_server.dsar.model import (
    COMPLETED,
    DsarRecord,
    parse_request_id,
    validate_create,
    validate_status,
)
from kaireon_server.dsar.notify import Notifier
from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.dsar.store import DigestSigner
from kaireon_server.dsar.worker import Worker
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.canonical import parse_timestamp
from kaireon_server.platform.db import Database
from kaireon_server.platform.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from kaireon_server.platform.paging import clamp_page_size, decode_token, encode_token

Context = grpc.aio.ServicerContext[Any, Any]
JSON = "application/json"


def _not_found() -> NotFound:
    return NotFound("no such DSAR request", reason="DSAR_REQUEST_NOT_FOUND")


async def _audit_read(con: asyncpg.Connection, record: DsarRecord, actor: str, via: str) -> None:
    await append_audit(
        con,
        record.tenant_id,
        action="dsar_export_downloaded",
        entity_type="dsar_request",
        entity_id=str(record.id),
        actor=actor,
        changes={"via": via, "sizeBytes": record.export_size or 0},
        personal={"subjectId": record.subject_id},
        subject_id=record.subject_id,
    )


class DsarServicer(dsar_pb2_grpc.DsarServiceServicer):
    def __init__(self, db: Database, settings: DsarSettings, notifier: Notifier) -> None:
        self._db = db
        self._settings = settings
        self._notifier = notifier

    async def CreateDsarRequest(
        self, request: dsar_pb2.CreateDsarRequestRequest, context: Context
    ) -> dsar_pb2.CreateDsarRequestResponse:
        identity = current_identity()
        cmd = validate_create(
            request.request_type, request.subject_id, request.encrypt, request.idempotency_key
        )
        if cmd.encrypt and self._settings.keyring is None:
            raise FailedPrecondition(
                "encryption was requested but this deployment has no encryption keys",
                reason="ENCRYPTION_NOT_CONFIGURED",
            )
        async with self._db.transaction(identity.tenant_id) as con:
            record, created = await repository.insert_request(
                con, identity.tenant_id, cmd, identity.actor
            )
            if not created:
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
            else:
                await append_audit(
                    con,
                    identity.tenant_id,
                    action="dsar_request_created",
                    entity_type="dsar_request",
                    entity_id=str(record.id),
                    actor=identity.actor,
                    changes={"requestType": cmd.request_type, "encrypt": cmd.encrypt},
                    personal={"subjectId": cmd.subject_id},
                    subject_id=cmd.subject_id,
                )
        return dsar_pb2.CreateDsarRequestResponse(request=request_message(record))

    async def _attach(
        self, con: asyncpg.Connection, record: DsarRecord, actor: str, budget: int
    ) -> dsar_pb2.DsarRequest:
        """The request, with its export inline when small enough and within `budget`."""
        if (
            record.status == COMPLETED
            and record.export_available
            and (record.export_size or 0) <= min(self._settings.inline_limit_bytes, budget)
        ):
            document = await repository.read_document(con, record)
            if document is not None:
                exported = export_message(document)
                if exported.ByteSize() <= budget:
                    await _audit_read(con, record, actor, "inline")
                    return request_message(record, exported=exported)
        return request_message(record)

    async def GetDsarRequest(
        self, request: dsar_pb2.GetDsarRequestRequest, context: Context
    ) -> dsar_pb2.GetDsarRequestResponse:
        identity = current_identity()
        request_id = parse_request_id(request.id)
        async with self._db.transaction(identity.tenant_id) as con:
            record = await repository.get_request(con, identity.tenant_id, request_id)
            if record is None:
                raise _not_found()
            message = await self._attach(
                con, record, identity.actor, self._settings.list_inline_budget_bytes
            )
        return dsar_pb2.GetDsarRequestResponse(request=message)

    async def ListDsarRequests(
        self, request: dsar_pb2.ListDsarRequestsRequest, context: Context
    ) -> dsar_pb2.ListDsarRequestsResponse:
        identity = current_identity()
        status = validate_status(request.status)
        limit = clamp_page_size(request.page_size, default=50, maximum=500)
        after = _decode_position(request.page_token)
        async with self._db.transaction(identity.tenant_id) as con:
            records = await repository.list_requests(
                con,
                identity.tenant_id,
                status=status,
                subject_id=request.subject_id or None,
                after=after,
                limit=limit + 1,
            )
            page, more = records[:limit], len(records) > limit
            budget = self._settings.list_inline_budget_bytes
            messages = []
            for record in page:
                message = await self._attach(con, record, identity.actor, budget)
                budget -= (
                    message.exported_data.ByteSize() if message.HasField("exported_data") else 0
                )
                messages.append(message)
        token = ""
        if more:
            last = page[-1]
            token = encode_token({"c": last.created_at.isoformat(), "i": str(last.id)})
        return dsar_pb2.ListDsarRequestsResponse(requests=messages, next_page_token=token)

    async def WatchDsarRequest(
        self, request: dsar_pb2.WatchDsarRequestRequest, context: Context
    ) -> AsyncIterator[dsar_pb2.WatchDsarRequestResponse]:
        identity = current_identity()
        tenant_id = identity.tenant_id
        request_id = parse_request_id(request.id)
        if request.after_version < 0:
            raise InvalidArgument.field("after_version", "must not be negative")
        with self._notifier.subscribe(tenant_id, str(request_id)) as subscription:
            # Subscribed before the first read: no change can slip in between.
            async with self._db.transaction(tenant_id, readonly=True) as con:
                record = await repository.get_request(con, tenant_id, request_id)
            if record is None:
                raise _not_found()
            last = request.after_version
            if last == 0:
                yield dsar_pb2.WatchDsarRequestResponse(request=request_message(record))
                last = record.version
            while not (record.terminal and last >= record.version):
                async with self._db.transaction(tenant_id, readonly=True) as con:
                    events = await repository.events_after(con, tenant_id, request_id, last)
                    fresh = await repository.get_request(con, tenant_id, request_id)
                if fresh is None:  # deleted meanwhile (tenant offboarding)
                    raise _not_found()
                record = fresh
                for event in events:
                    state = record.at_event(event)
                    yield dsar_pb2.WatchDsarRequestResponse(request=request_message(state))
                    last = state.version
                    if state.terminal:
                        return
                if not events:
                    await subscription.wait(self._settings.poll_seconds)

    async def StreamDsarExport(
        self, request: dsar_pb2.StreamDsarExportRequest, context: Context
    ) -> AsyncIterator[dsar_pb2.StreamDsarExportResponse]:
        identity = current_identity()
        tenant_id = identity.tenant_id
        request_id = parse_request_id(request.id)
        async with self._db.transaction(tenant_id) as con:
            record = await repository.get_request(con, tenant_id, request_id)
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
            await _audit_read(con, record, identity.actor, "download")
        await context.send_initial_metadata(
            (
                ("x-export-digest-sha256", record.export_digest or ""),
                ("x-export-signature", record.export_signature or ""),
            )
        )
        digest = hashlib.sha256()
        offset = 0
        assert record.export_attempt is not None
        # One short transaction per chunk: a slow reader holds no connection.
        for seq in range(record.export_chunks or 0):
            async with self._db.transaction(tenant_id, readonly=True) as con:
                data = await repository.read_chunk(
                    con, tenant_id, request_id, record.export_attempt, seq
                )
            if data is None:
                raise DataLoss("the export was deleted during the download", reason="EXPORT_ERASED")
            digest.update(data)
            yield dsar_pb2.StreamDsarExportResponse(
                chunk=httpbody_pb2.HttpBody(content_type=JSON, data=data), offset=offset
            )
            offset += len(data)
        if digest.hexdigest() != record.export_digest:
            raise DataLoss("the stored export does not match its digest", reason="EXPORT_CORRUPT")


def _decode_position(token: str) -> tuple[datetime, uuid.UUID] | None:
    position = decode_token(token)
    if not position:
        return None
    try:
        return parse_timestamp(str(position["c"])), uuid.UUID(str(position["i"]))
    except (KeyError, ValueError):
        raise InvalidArgument.field("page_token", "malformed page token") from None


class DsarCapability:
    """The service plus, in every process, the notifier and the export workers."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.settings = DsarSettings.from_env(ctx.settings.env)
        self._notifier = Notifier(ctx.listener)
        self._servicer = DsarServicer(ctx.db, self.settings, self._notifier)
        deps = JobDeps(
            ctx.db,
            self.settings,
            DigestSigner.from_env(ctx.settings.env, ctx.signer),
            self.settings.keyring,
            owner="",
        )
        self.workers = [Worker(deps, self._notifier, i) for i in range(self.settings.workers)]

    @property
    def descriptor(self) -> ServiceDescriptor:
        return dsar_pb2.DESCRIPTOR.services_by_name["DsarService"]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        dsar_pb2_grpc.add_DsarServiceServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        await self._notifier.start()
        for worker in self.workers:
            worker.start()

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers))
        await self._notifier.stop()


def build(ctx: ServiceContext) -> DsarCapability:
    return DsarCapability(ctx)
