"""Builds and runs the server: database, capabilities, interceptor, health, reflection, gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kaireon_server.audit import service as audit_service
from kaireon_server.capability import Build, Capability, ServiceContext
from kaireon_server.dsar import service as dsar_service
from kaireon_server.erasure import service as erasure_service
from kaireon_server.flow import service as flow_service
from kaireon_server.platform import event_loop
from kaireon_server.platform.admission import Admission, AdmissionInterceptor, AdmissionSettings
from kaireon_server.platform.auth.authenticator import Authenticator
from kaireon_server.platform.auth.interceptor import KaireonInterceptor
from kaireon_server.platform.auth.policy import build_policy
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database, connect_database
from kaireon_server.platform.db.listener import Listener
from kaireon_server.platform.health import HealthMonitor
from kaireon_server.platform.observability import metrics, tracing
from kaireon_server.platform.observability.interceptor import ObservabilityInterceptor
from kaireon_server.platform.observability.sampler import Sampler
from kaireon_server.platform.reflection import enable_reflection
from kaireon_server.platform.signing import signer_from_env
from kaireon_server.provenance import service as provenance_service
from kaireon_server.requests import service as requests_service

if TYPE_CHECKING:  # imported when serving REST only (aiohttp)
    from kaireon_server.gateway.server import GatewayServer

log = logging.getLogger(__name__)

# Each capability folder's service.py exposes build(ctx) -> Capability.
CAPABILITIES: tuple[Build, ...] = (
    audit_service.build,
    dsar_service.build,
    erasure_service.build,
    flow_service.build,
    provenance_service.build,
    requests_service.build,
)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def _grpc_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Several processes (KAIREON_WORKERS) share the port.
        ("grpc.so_reuseport", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Keepalive, idle/age limits, handshake timeout (platform/admission.py).
        *admission_settings(settings).grpc_options(),
    ]


def admission_settings(settings: Settings) -> AdmissionSettings:
    return AdmissionSettings.from_env(settings.env, settings.grpc_max_concurrent_rpcs)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS with a client CA) from KAIREON_TLS_*; None = plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def https_context(settings: Settings) -> ssl.SSLContext | None:
    """The REST adapter's TLS (and mTLS) context, from the same files as gRPC."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        context.load_verify_locations(settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class App:
    """One server process. `start()` returns once serving; `stop()` drains and closes."""

    settings: Settings
    db: Database | None = None
    grpc_port: int = 0
    http_port: int = 0
    capabilities: list[Capability] = field(default_factory=list)
    admission: Admission | None = None
    _server: grpc.aio.Server | None = None
    _health: HealthMonitor | None = None
    _gateway: GatewayServer | None = None
    # Private Unix socket (directory mode 0700) the in-process REST adapter calls.
    _gateway_socket_dir: str = ""
    _extra_builders: Sequence[Build] = ()
    # /metrics (KAIREON_METRICS_PORT; 0 = off); docs/OPERATIONS.md.
    metrics_port: int = 0
    _metrics_server: metrics.MetricsServer | None = None
    _sampler: Sampler | None = None

    async def start(self) -> None:
        settings = self.settings
        self.db = await connect_database(settings)
        try:
            await self._start_serving()
        except BaseException:
            await self.db.close()
            if self._gateway_socket_dir:
                shutil.rmtree(self._gateway_socket_dir, ignore_errors=True)
            raise

    async def _start_serving(self) -> None:
        assert self.db is not None
        settings = self.settings
        if settings.demo:
            from kaireon_server.demo.seed import seed_if_empty

            await seed_if_empty(self.db)
        metrics_settings = metrics.MetricsSettings(settings.env)
        metrics.set_recording(metrics.wanted(settings.env))
        tracing.configure_tracing(settings.env)
        ctx = ServiceContext(
            settings=settings,
            db=self.db,
            signer=signer_from_env(settings.env),
            listener=Listener.for_database(self.db),
        )
        metrics.set_build_info(*metrics.build_labels(settings.env), [ctx.signer.key_id])
        self.capabilities = [build(ctx) for build in (*CAPABILITIES, *self._extra_builders)]
        descriptors = [c.descriptor for c in self.capabilities]
        policy = build_policy(descriptors)
        interceptor = KaireonInterceptor(
            Authenticator(
                settings.jwt,
                trust_headers=settings.trust_headers,
                trusted_proxies=settings.trusted_proxies,
            ),
            policy,
        )
        limits = admission_settings(settings)
        self.db.retry_after = limits.retry_after_seconds
        self.admission = Admission(limits)
        server = grpc.aio.server(
            # Authenticate first, then admit under the caller's tenant; public
            # methods have budgets of their own (platform/admission.py), so
            # grpc's maximum_concurrent_rpcs, which counts every call, is not used.
            # Metrics and spans outermost: they see every refusal's final code.
            interceptors=[
                *([ObservabilityInterceptor()] if metrics.recording() or tracing.enabled() else []),
                interceptor,
                AdmissionInterceptor(self.admission, policy),
            ],
            options=_grpc_options(settings),
        )
        for capability in self.capabilities:
            capability.add_to_server(server)
        names = [d.full_name for d in descriptors]
        self._health = HealthMonitor(self.db, names, settings.health_interval)
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        enable_reflection(
            server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        )
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        credentials = server_credentials(settings)
        self.grpc_port = (
            server.add_secure_port(address, credentials)
            if credentials
            else server.add_insecure_port(address)
        )
        if self.grpc_port == 0:
            raise RuntimeError(f"cannot listen on gRPC port {settings.grpc_port}")
        if settings.http_port is not None:
            # The in-process REST adapter talks to this server over a private Unix
            # socket: plaintext, so mTLS needs no client cert, and its calls come
            # from a trusted peer whatever KAIREON_TRUSTED_PROXIES says (the adapter
            # applies that list to its own HTTP peers; docs/GATEWAY.md).
            self._gateway_socket_dir = tempfile.mkdtemp(prefix="kaireon-gw-")
            server.add_insecure_port(f"unix:{self._gateway_socket_dir}/grpc.sock")
        await server.start()
        self._server = server
        await self._health.start()
        for capability in self.capabilities:
            await capability.start()
        if settings.http_port is not None:
            await self._start_gateway([d.full_name for d in descriptors])
        if metrics_settings.enabled or metrics.multiprocess_child():
            self._sampler = Sampler(self.db, metrics_settings)
            self._sampler.start()
        if metrics_settings.enabled and not metrics.multiprocess_child():
            self._metrics_server = metrics.serve_metrics(metrics_settings)
            self.metrics_port = self._metrics_server.port
        log.info("keys loaded", extra=self._key_summary(ctx))
        log.info(
            "serving",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "metrics_port": self.metrics_port,
                "pid": os.getpid(),
                "event_loop": event_loop.running_loop_name(),
            },
        )

    async def _start_gateway(self, services: list[str]) -> None:
        """The REST adapter in this process, calling this process's gRPC server."""
        from kaireon_server.gateway.server import GatewayServer
        from kaireon_server.gateway.settings import GatewaySettings

        settings = self.settings
        target = f"unix:{self._gateway_socket_dir}/grpc.sock"
        env = {k: v for k, v in settings.env.items() if k != "KAIREON_HTTP_PORT"}
        self._gateway = GatewayServer(
            target,
            services,
            GatewaySettings.from_env(env),
            # /healthz reads this process's monitor, not a public gRPC call that
            # anonymous clients could crowd out.
            health_source=self._health_status,
        )
        host = "127.0.0.1" if settings.grpc_host == "127.0.0.1" else settings.grpc_host
        self.http_port = await self._gateway.start(
            # SO_REUSEPORT, as for gRPC: KAIREON_WORKERS processes share the port.
            host,
            settings.http_port,
            ssl_context=https_context(settings),
            reuse_port=True,
        )

    def _key_summary(self, ctx: ServiceContext) -> dict[str, object]:
        """Key ids and versions for the start-up log: which keys, never key material."""
        summary: dict[str, object] = {"signing_key_id": ctx.signer.key_id or "none (unsigned)"}
        for capability in self.capabilities:
            report = getattr(capability, "key_summary", None)
            if report is not None:
                summary.update(report())
        return summary

    def _drain_summary(self) -> dict[str, object]:
        """What a shutdown interrupts or waits for, counted as it begins."""
        summary: dict[str, object] = {
            "inflight_calls": self.admission.calls.inflight if self.admission else 0,
            "inflight_public_calls": self.admission.public.inflight if self.admission else 0,
        }
        for capability in self.capabilities:
            report = getattr(capability, "drain_summary", None)
            if report is not None:
                summary.update(report())
        return summary

    async def _health_status(self) -> str:
        return "SERVING" if self._health is not None and self._health.serving else "NOT_SERVING"

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace if grace is None else grace
        draining = self._drain_summary()
        log.info("draining", extra={**draining, "grace_seconds": grace})
        if self._health is not None:
            await self._health.enter_shutdown()
        if self._gateway is not None:
            await self._gateway.stop()
        if self._server is not None:
            # Stop accepting; let in-flight calls finish within the grace period.
            await self._server.stop(grace)
        for capability in reversed(self.capabilities):
            await capability.stop()
        if self._sampler is not None:
            await self._sampler.stop()
            self._sampler = None
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        if self._gateway_socket_dir:
            shutil.rmtree(self._gateway_socket_dir, ignore_errors=True)
            self._gateway_socket_dir = ""
        if self.db is not None:
            await self.db.close()
            self.db = None
        log.info("stopped", extra={"drained": draining})


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; exit code 0 after a graceful shutdown."""
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await app.stop()
    return 0
