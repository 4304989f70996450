"""Gateway settings, read from the environment by the standalone entry point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kaireon_server.platform import event_loop as loops
from kaireon_server.platform.auth.proxies import TrustedProxies, TrustedProxiesError
from kaireon_server.platform.env import EnvReader, process_environment
from kaireon_server.platform.errors import ConfigurationError

DEFAULT_FORWARDED_HEADERS = ("x-tenant-id", "x-user-role", "authorization")
DEFAULT_PASSTHROUGH_HEADERS = (
    "x-provenance-schema",
    "x-provenance-digest",
    "x-provenance-signature",
    # The emission's audit row, whose evidence proof GetInclusionProof serves (docs/AUDIT.md).
    "x-provenance-audit-event-id",
    # A DSAR export download carries its digest and signature (docs/DSAR.md).
    "x-export-digest-sha256",
    "x-export-signature",
    # Its evidence proof (base64 of the C2SP tlog-proof) or, while pending, the
    # completion row's id to fetch it with (docs/AUDIT.md).
    "x-export-tlog-proof",
    "x-export-audit-event-id",
)


@dataclass(frozen=True)
class GatewaySettings:
    """How the REST adapter behaves; every field has a production default."""

    # Reject unknown JSON fields, unknown query parameters and query parameters
    # the route does not read with 400. grpc-gateway ignores them, but a
    # misspelled {"dryrun": true} must not run a real erasure. False restores
    # grpc-gateway's leniency; duplicate keys and non-finite numbers are
    # refused either way (transcode.py).
    strict_json: bool = True
    # Request bodies above this many bytes get 413 before reaching gRPC.
    max_body_bytes: int = 4 * 1024 * 1024
    # Deadline of unary calls without a Grpc-Timeout header; None = no deadline.
    default_timeout_seconds: float | None = 30.0
    # Deadline of server-streaming calls without a Grpc-Timeout header. Watches
    # are meant to stay open, so by default they end only with the client.
    stream_timeout_seconds: float | None = None
    # Message size limits of the gateway's gRPC channel (grpc-gateway #445).
    max_grpc_message_bytes: int = 64 * 1024 * 1024
    # 405 (with Allow) or 501 as grpc-gateway answers a known path under the
    # wrong method.
    method_not_allowed_status: int = 405
    # Request headers sent as gRPC metadata under their lower-case name.
    forwarded_headers: tuple[str, ...] = DEFAULT_FORWARDED_HEADERS
    # HTTP peers whose X-Tenant-Id / X-User-Role are forwarded (KAIREON_TRUSTED_PROXIES);
    # from any other peer those headers are refused with 401.
    trusted_proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies.parse(None))
    # Response metadata keys sent as HTTP headers under their own name instead
    # of Grpc-Metadata-<key>.
    passthrough_headers: tuple[str, ...] = DEFAULT_PASSTHROUGH_HEADERS
    # Deadline of the grpc.health.v1 Check behind /healthz.
    health_timeout_seconds: float = 2.0
    # Where the standalone gateway listens; None means the adapter is off.
    http_host: str = "0.0.0.0"  # noqa: S104 - a gateway listens on all interfaces
    http_port: int | None = 8080
    # Slow and idle clients: a connection must deliver complete request headers
    # within header_timeout_seconds of opening or of its previous response
    # (aiohttp's keep-alive timer; it also closes idle keep-alive connections),
    # and a request body within body_timeout_seconds (else 408 and closed).
    header_timeout_seconds: float = 20.0
    body_timeout_seconds: float = 30.0
    # Longest request line / header field, and most header fields (else 400).
    max_header_bytes: int = 8190
    max_headers: int = 100
    # uvloop or asyncio, for the standalone gateway's process (platform/event_loop.py).
    event_loop: str = loops.DEFAULT

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ConfigurationError("max_body_bytes must be positive")
        if self.method_not_allowed_status not in (405, 501):
            raise ConfigurationError("method_not_allowed_status must be 405 or 501")
        for timeout in (self.default_timeout_seconds, self.stream_timeout_seconds):
            if timeout is not None and timeout <= 0:
                raise ConfigurationError("timeouts must be positive or None")
        if self.header_timeout_seconds <= 0 or self.body_timeout_seconds <= 0:
            raise ConfigurationError("header and body timeouts must be positive")
        if self.max_header_bytes <= 0 or self.max_headers <= 0:
            raise ConfigurationError("header limits must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        """Reads the KAIREON_HTTP_PORT and KAIREON_GATEWAY_* variables."""
        read = EnvReader(process_environment() if environ is None else environ)
        defaults = cls()
        try:
            trusted_proxies = TrustedProxies.parse(read.optional_text("KAIREON_TRUSTED_PROXIES"))
        except TrustedProxiesError as exc:
            raise ConfigurationError(str(exc)) from None
        return cls(
            strict_json=read.boolean("KAIREON_GATEWAY_STRICT_JSON", defaults.strict_json),
            max_body_bytes=read.integer(
                "KAIREON_GATEWAY_MAX_BODY_BYTES", defaults.max_body_bytes, minimum=1
            ),
            default_timeout_seconds=read.seconds_or_none(
                "KAIREON_GATEWAY_DEFAULT_TIMEOUT_SECONDS", defaults.default_timeout_seconds
            ),
            stream_timeout_seconds=read.seconds_or_none(
                "KAIREON_GATEWAY_STREAM_TIMEOUT_SECONDS", defaults.stream_timeout_seconds
            ),
            trusted_proxies=trusted_proxies,
            http_host=read.text("KAIREON_HTTP_HOST", defaults.http_host),
            # Standalone: 0 = any free port (docs/GATEWAY.md); "off" disables the adapter.
            http_port=read.listen_port("KAIREON_HTTP_PORT", defaults.http_port, zero_is_off=False),
            header_timeout_seconds=read.number(
                "KAIREON_GATEWAY_HEADER_TIMEOUT_SECONDS",
                defaults.header_timeout_seconds,
                exclusive_minimum=0,
            ),
            body_timeout_seconds=read.number(
                "KAIREON_GATEWAY_BODY_TIMEOUT_SECONDS",
                defaults.body_timeout_seconds,
                exclusive_minimum=0,
            ),
            max_header_bytes=read.integer(
                "KAIREON_GATEWAY_MAX_HEADER_BYTES", defaults.max_header_bytes, minimum=1
            ),
            max_headers=read.integer(
                "KAIREON_GATEWAY_MAX_HEADERS", defaults.max_headers, minimum=1
            ),
            event_loop=loops.from_env(read),
        )
