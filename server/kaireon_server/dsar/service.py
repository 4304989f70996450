"""DsarService handlers (protobuf <-> domain, nothing else) and the capability
that runs the export workers. The use cases are dsar/requests.py.

Roles (the protos declare them): every method needs `operator`; viewers get
PERMISSION_DENIED because every answer names a data subject or carries their
data. Reads of an export — attached inline or downloaded — write an audit row.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf.descriptor import ServiceDescriptor

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon_server.audit import tlog
from kaireon_server.capability import ServiceContext
from kaireon_server.dsar.convert import export_message, request_message
from kaireon_server.dsar.evidence import export_evidence
from kaireon_server.dsar.jobs import JobDeps
from kaireon_server.dsar.notify import Notifier
from kaireon_server.dsar.requests import DsarRequests, Shown
from kaireon_server.dsar.settings import DsarSettings
from kaireon_server.dsar.store import DigestSigner
from kaireon_server.dsar.worker import ExportWorkers
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.db import Database
from kaireon_server.requests.intake import direct_access

Context = grpc.aio.ServicerContext[Any, Any]
JSON = "application/json"


def _render(document: bytes) -> tuple[dsar_pb2.DsarExport, int]:
    exported = export_message(document)
    return exported, exported.ByteSize()


def _shown(shown: Shown[dsar_pb2.DsarExport]) -> dsar_pb2.DsarRequest:
    return request_message(shown.record, exported=shown.export)


class DsarServicer(dsar_pb2_grpc.DsarServiceServicer):
    def __init__(self, requests: DsarRequests, db: Database, log: tlog.TlogSettings) -> None:
        self._requests = requests
        self._db = db
        self._log = log

    async def CreateDsarRequest(
        self, request: dsar_pb2.CreateDsarRequestRequest, context: Context
    ) -> dsar_pb2.CreateDsarRequestResponse:
        identity = current_identity()
        record = await self._requests.create(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_type=request.request_type,
            subject_id=request.subject_id,
            encrypt=request.encrypt,
            idempotency_key=request.idempotency_key,
            # The export is also an in-progress request of the lifecycle.
            lifecycle=direct_access(),
        )
        return dsar_pb2.CreateDsarRequestResponse(request=request_message(record))

    async def GetDsarRequest(
        self, request: dsar_pb2.GetDsarRequestRequest, context: Context
    ) -> dsar_pb2.GetDsarRequestResponse:
        identity = current_identity()
        shown = await self._requests.get(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            request_id=request.id,
            render=_render,
        )
        return dsar_pb2.GetDsarRequestResponse(request=_shown(shown))

    async def ListDsarRequests(
        self, request: dsar_pb2.ListDsarRequestsRequest, context: Context
    ) -> dsar_pb2.ListDsarRequestsResponse:
        identity = current_identity()
        page, token = await self._requests.list_requests(
            tenant_id=identity.tenant_id,
            actor=identity.actor,
            status=request.status,
            subject_id=request.subject_id,
            page_size=request.page_size,
            page_token=request.page_token,
            render=_render,
        )
        return dsar_pb2.ListDsarRequestsResponse(
            requests=[_shown(s) for s in page], next_page_token=token
        )

    async def WatchDsarRequest(
        self, request: dsar_pb2.WatchDsarRequestRequest, context: Context
    ) -> AsyncIterator[dsar_pb2.WatchDsarRequestResponse]:
        identity = current_identity()
        states = self._requests.watch(
            tenant_id=identity.tenant_id,
            request_id=request.id,
            after_version=request.after_version,
        )
        async for state in states:
            yield dsar_pb2.WatchDsarRequestResponse(request=request_message(state))

    async def StreamDsarExport(
        self, request: dsar_pb2.StreamDsarExportRequest, context: Context
    ) -> AsyncIterator[dsar_pb2.StreamDsarExportResponse]:
        identity = current_identity()
        record = await self._requests.open_export(
            tenant_id=identity.tenant_id, actor=identity.actor, request_id=request.id
        )
        evidence = await export_evidence(self._db, self._log, record)
        await context.send_initial_metadata(
            (
                ("x-export-digest-sha256", record.export_digest or ""),
                ("x-export-signature", record.export_signature or ""),
                # Base64: the proof is multi-line UTF-8, a header value is one ASCII line.
                ("x-export-tlog-proof", base64.b64encode(evidence.proof.text.encode()).decode()),
                ("x-export-audit-event-id", evidence.audit_event_id),
            )
        )
        offset = 0
        async for data in self._requests.export_chunks(record):
            yield dsar_pb2.StreamDsarExportResponse(
                chunk=httpbody_pb2.HttpBody(content_type=JSON, data=data), offset=offset
            )
            offset += len(data)


class DsarCapability:
    """The service plus, in every process, the notifier and the export workers."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.settings = DsarSettings.from_env(ctx.settings.env)
        self._notifier = Notifier(ctx.listener)
        self._servicer = DsarServicer(
            DsarRequests(ctx.db, self.settings, self._notifier),
            ctx.db,
            tlog.TlogSettings.from_env(ctx.settings.env),
        )
        deps = JobDeps(
            ctx.db,
            self.settings,
            DigestSigner.from_env(ctx.settings.env, ctx.signer),
            self.settings.keyring,
            owner="",
        )
        self.workers = ExportWorkers(deps, self._notifier)

    @property
    def descriptor(self) -> ServiceDescriptor:
        return dsar_pb2.DESCRIPTOR.services_by_name["DsarService"]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        dsar_pb2_grpc.add_DsarServiceServicer_to_server(self._servicer, server)

    def key_summary(self) -> dict[str, object]:
        """The export encryption key versions loaded (names only, never key bytes)."""
        keyring = self.settings.keyring
        return {
            "encryption_key_versions": sorted(keyring.keys) if keyring else [],
            "encryption_active_key": keyring.active if keyring else "",
        }

    def drain_summary(self) -> dict[str, object]:
        return {"dsar_jobs_in_progress": self.workers.busy}

    async def start(self) -> None:
        await self._notifier.start()
        self.workers.start()

    async def stop(self) -> None:
        await self.workers.stop()
        await self._notifier.stop()


def build(ctx: ServiceContext) -> DsarCapability:
    return DsarCapability(ctx)
