"""ProvenanceService handlers: thin translation between protobuf and the emitter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf.descriptor import ServiceDescriptor

from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.capability import ServiceContext
from kaireon_server.platform.audit_chain import AuditBatcher
from kaireon_server.platform.auth import current_identity
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.env import EnvReader
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.platform.rpc.timestamps import optional_time
from kaireon_server.platform.signing import ALGORITHM
from kaireon_server.provenance import bulk
from kaireon_server.provenance.bundle import CONTENT_TYPE, SCHEMA_VERSION
from kaireon_server.provenance.emit import ProvenanceEmitter, system_clock

Context = grpc.aio.ServicerContext[Any, Any]

# Test-only knob: shifts this replica's clock (used for the emission audit row
# only), so tests can run two replicas "minutes apart" without sleeping.
CLOCK_OFFSET_ENV = "KAIREON_CLOCK_OFFSET_SECONDS"
BATCH_LINGER_ENV = "KAIREON_PROVENANCE_BATCH_LINGER_MS"


def _clock_offset(env: Mapping[str, str]) -> float:
    return EnvReader(env).number(CLOCK_OFFSET_ENV, 0.0)


def _batch_linger(env: Mapping[str, str]) -> float:
    """Seconds a busy tenant's next read or audit batch waits for more calls."""
    return EnvReader(env).number(BATCH_LINGER_ENV, 1.0, minimum=0.0, maximum=20.0) / 1000


def _build_env(env: Mapping[str, str]) -> BuildEnv:
    try:
        return BuildEnv.from_env(env)
    except ValueError as exc:
        # Fail at start-up, not on the first bundle.
        raise ConfigurationError(f"build identity: {exc}") from None


class ProvenanceServicer(provenance_pb2_grpc.ProvenanceServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        env = ctx.settings.env
        self._signer = ctx.signer
        linger = _batch_linger(env)
        self.audit = AuditBatcher(ctx.db, linger=linger)
        self.emitter = ProvenanceEmitter(
            db=ctx.db,
            signer=ctx.signer,
            build=_build_env(env),
            clock=system_clock(_clock_offset(env)),
            audit=self.audit,
            read_linger=linger,
        )

    async def GetDecisionProvenance(
        self, request: provenance_pb2.GetDecisionProvenanceRequest, context: Context
    ) -> provenance_pb2.GetDecisionProvenanceResponse:
        emission = await self.emitter.emit(current_identity(), request.decision_id)
        bundle = emission.bundle
        # Sent as initial metadata; the REST adapter turns them into X-Provenance-*.
        await context.send_initial_metadata(
            (
                ("x-provenance-schema", SCHEMA_VERSION),
                ("x-provenance-digest", bundle.digest_sha256),
                ("x-provenance-signature", emission.signature),
                ("x-provenance-audit-event-id", emission.audit_event_id),
            )
        )
        return provenance_pb2.GetDecisionProvenanceResponse(
            bundle=httpbody_pb2.HttpBody(content_type=CONTENT_TYPE, data=bundle.body),
            schema=SCHEMA_VERSION,
            digest_sha256=bundle.digest_sha256,
            signature=emission.signature,
            audit_event_id=emission.audit_event_id,
        )

    async def StreamDecisionProvenance(
        self, request: provenance_pb2.StreamDecisionProvenanceRequest, context: Context
    ) -> AsyncIterator[provenance_pb2.StreamDecisionProvenanceResponse]:
        selection = bulk.select(
            list(request.decision_ids),
            optional_time(request, "start_time"),
            optional_time(request, "end_time"),
            request.max_decisions,
        )
        async for item in bulk.stream(self.emitter, current_identity(), selection):
            if item.emission is None:
                yield provenance_pb2.StreamDecisionProvenanceResponse(
                    decision_id=item.decision_id, not_found=True
                )
                continue
            emission = item.emission
            yield provenance_pb2.StreamDecisionProvenanceResponse(
                decision_id=item.decision_id,
                bundle=httpbody_pb2.HttpBody(content_type=CONTENT_TYPE, data=emission.bundle.body),
                digest_sha256=emission.bundle.digest_sha256,
                signature=emission.signature,
                audit_event_id=emission.audit_event_id,
            )

    async def GetSigningKey(
        self, request: provenance_pb2.GetSigningKeyRequest, context: Context
    ) -> provenance_pb2.GetSigningKeyResponse:
        pem = self._signer.public_key_pem
        return provenance_pb2.GetSigningKeyResponse(
            public_key_pem=pem,
            key_id=self._signer.key_id,
            algorithm=ALGORITHM if pem else "",
        )


class ProvenanceCapability:
    """The service plus its read and audit batches, stopped after the server drained its calls."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._servicer = ProvenanceServicer(ctx)

    @property
    def descriptor(self) -> ServiceDescriptor:
        return provenance_pb2.DESCRIPTOR.services_by_name["ProvenanceService"]

    def add_to_server(self, server: grpc.aio.Server) -> None:
        provenance_pb2_grpc.add_ProvenanceServiceServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._servicer.emitter.close()
        await self._servicer.audit.close()


def build(ctx: ServiceContext) -> ProvenanceCapability:
    return ProvenanceCapability(ctx)
