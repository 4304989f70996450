"""Gateway settings, read from the environment by the standalone entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from kaireon_server.platform.auth.proxies import TrustedProxies

DEFAULT_FORWARDED_HEADERS = ("x-tenant-id", "x-user-role", "authorization")
DEFAULT_PASSTHROUGH_HEADERS = (
    "x-provenance-schema",
    "x-provenance-digest",
    "x-provenance-signature",
    # A DSAR export download carries its digest and signature (docs/DSAR.md).
    "x-export-digest-sha256",
    "x-export-signature",
)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


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

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if self.method_not_allowed_status not in (405, 501):
            raise ValueError("method_not_allowed_status must be 405 or 501")
        for timeout in (self.default_timeout_seconds, self.stream_timeout_seconds):
            if timeout is not None and timeout <= 0:
                raise ValueError("timeouts must be positive or None")
        if self.header_timeout_seconds <= 0 or self.body_timeout_seconds <= 0:
            raise ValueError("header and body timeouts must be positive")
        if self.max_header_bytes <= 0 or self.max_headers <= 0:
            raise ValueError("header limits must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        """Reads the KAIREON_HTTP_PORT and KAIREON_GATEWAY_* variables."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            strict_json=_bool(env, "KAIREON_GATEWAY_STRICT_JSON", defaults.strict_json),
            max_body_bytes=_int(env, "KAIREON_GATEWAY_MAX_BODY_BYTES", defaults.max_body_bytes),
            default_timeout_seconds=_timeout(
                env, "KAIREON_GATEWAY_DEFAULT_TIMEOUT_SECONDS", defaults.default_timeout_seconds
            ),
            stream_timeout_seconds=_timeout(
                env, "KAIREON_GATEWAY_STREAM_TIMEOUT_SECONDS", defaults.stream_timeout_seconds
            ),
            trusted_proxies=TrustedProxies.parse(env.get("KAIREON_TRUSTED_PROXIES")),
            http_host=env.get("KAIREON_HTTP_HOST", defaults.http_host),
            http_port=_port(env, "KAIREON_HTTP_PORT", defaults.http_port),
            header_timeout_seconds=_seconds(
                env, "KAIREON_GATEWAY_HEADER_TIMEOUT_SECONDS", defaults.header_timeout_seconds
            ),
            body_timeout_seconds=_seconds(
                env, "KAIREON_GATEWAY_BODY_TIMEOUT_SECONDS", defaults.body_timeout_seconds
            ),
            max_header_bytes=_int(
                env, "KAIREON_GATEWAY_MAX_HEADER_BYTES", defaults.max_header_bytes
            ),
            max_headers=_int(env, "KAIREON_GATEWAY_MAX_HEADERS", defaults.max_headers),
        )


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _timeout(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    """Seconds; 0 (or "none") means no deadline."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value or None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds (no "none": these bounds are always on)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive")
    return value


def _port(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A TCP port; "off" disables the adapter."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("off", "none", "disabled"):
        return None
    port = _int(env, name, 0)
    if not 0 <= port <= 65535:
        raise ValueError(f"{name} must be a port number or 'off', got {raw!r}")
    return port
