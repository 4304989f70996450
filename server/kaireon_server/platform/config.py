"""Settings from the environment. Every name is documented in the README table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kaireon_server.platform.auth.proxies import TrustedProxies, TrustedProxiesError
from kaireon_server.platform.errors import ConfigurationError


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be > 0, got {value}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _http_port(env: Mapping[str, str]) -> int | None:
    """KAIREON_HTTP_PORT: a port; 0 or "off" = adapter off; "auto" = any free port."""
    raw = (env.get("KAIREON_HTTP_PORT") or "").strip().lower()
    if raw == "":
        return 8080
    if raw in {"0", "off"}:
        return None
    if raw == "auto":
        return 0
    port = _int(env, "KAIREON_HTTP_PORT", 8080, minimum=1)
    if port > 65535:
        raise ConfigurationError(f"KAIREON_HTTP_PORT must be a port number, got {raw!r}")
    return port


@dataclass(frozen=True)
class JwtSettings:
    """Bearer-token verification; enabled when a secret or a public key is set."""

    hs256_secret: str | None = field(default=None, repr=False)
    public_key_pem: str | None = field(default=None, repr=False)
    issuer: str | None = None
    audience: str | None = None
    tenant_claim: str = "tenant_id"
    role_claim: str = "role"

    @property
    def enabled(self) -> bool:
        return bool(self.hs256_secret or self.public_key_pem)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    # The pool's DSN (application role); unset = DATABASE_URL with user kaireon_app.
    app_database_url: str | None = field(default=None, repr=False)
    app_database_password: str | None = field(default=None, repr=False)
    data_dir: Path = Path(".kaireon")
    grpc_host: str = "0.0.0.0"  # noqa: S104 - a server listens on all interfaces by default
    grpc_port: int = 50051
    # None = REST adapter off; 0 = any free port (tests).
    http_port: int | None = 8080
    trust_headers: bool = False
    # Peers whose identity headers count (KAIREON_TRUSTED_PROXIES); default loopback.
    trusted_proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies.parse(None))
    jwt: JwtSettings = JwtSettings()
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_acquire_timeout: float = 5.0
    db_statement_timeout_ms: int = 30_000
    # Calls in flight per process before new ones get RESOURCE_EXHAUSTED; 0 = no limit.
    grpc_max_concurrent_rpcs: int = 1000
    # Client-side bound of every pooled statement: a stalled or black-holed
    # connection fails instead of hanging. Default: the statement timeout + 5 s,
    # so PostgreSQL's own (cleaner) cancellation normally comes first.
    db_command_timeout: float = 35.0
    health_interval: float = 2.0
    shutdown_grace: float = 10.0
    workers: int = 1
    log_level: str = "INFO"
    # TLS for gRPC and REST when a certificate and key are given; a client CA
    # additionally requires client certificates (mTLS).
    tls_cert: Path | None = None
    tls_key: Path | None = field(default=None, repr=False)
    tls_client_ca: Path | None = None
    demo: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, demo: bool = False) -> Settings:
        env = dict(os.environ if env is None else env)
        public_key = env.get("KAIREON_JWT_PUBLIC_KEY") or None
        if public_key and not public_key.lstrip().startswith("-----BEGIN"):
            try:
                public_key = Path(public_key).read_text()
            except OSError as exc:
                raise ConfigurationError(
                    f"KAIREON_JWT_PUBLIC_KEY: cannot read key file ({exc.strerror})"
                ) from None
        jwt = JwtSettings(
            hs256_secret=env.get("KAIREON_JWT_HS256_SECRET") or None,
            public_key_pem=public_key,
            issuer=env.get("KAIREON_JWT_ISSUER") or None,
            audience=env.get("KAIREON_JWT_AUDIENCE") or None,
            tenant_claim=env.get("KAIREON_JWT_TENANT_CLAIM") or "tenant_id",
            role_claim=env.get("KAIREON_JWT_ROLE_CLAIM") or "role",
        )
        try:
            trusted_proxies = TrustedProxies.parse(env.get("KAIREON_TRUSTED_PROXIES"))
        except TrustedProxiesError as exc:
            raise ConfigurationError(str(exc)) from None
        statement_timeout_ms = _int(env, "KAIREON_DB_STATEMENT_TIMEOUT_MS", 30_000, minimum=1)
        settings = cls(
            database_url=env.get("DATABASE_URL") or None,
            app_database_url=env.get("KAIREON_APP_DATABASE_URL") or None,
            app_database_password=env.get("KAIREON_APP_DATABASE_PASSWORD") or None,
            data_dir=Path(env.get("KAIREON_DATA_DIR") or ".kaireon"),
            grpc_host=env.get("KAIREON_GRPC_HOST") or "0.0.0.0",  # noqa: S104
            grpc_port=_int(env, "KAIREON_GRPC_PORT", 50051),
            http_port=_http_port(env),
            # Bare identity headers are only trusted when asked for, or for the demo.
            trust_headers=_bool(env, "KAIREON_TRUST_HEADERS", demo),
            trusted_proxies=trusted_proxies,
            jwt=jwt,
            db_pool_min=_int(env, "KAIREON_DB_POOL_MIN", 2, minimum=1),
            db_pool_max=_int(env, "KAIREON_DB_POOL_MAX", 10, minimum=1),
            db_acquire_timeout=_float(env, "KAIREON_DB_ACQUIRE_TIMEOUT", 5.0),
            db_statement_timeout_ms=statement_timeout_ms,
            db_command_timeout=_float(
                env, "KAIREON_DB_COMMAND_TIMEOUT", statement_timeout_ms / 1000 + 5.0
            ),
            grpc_max_concurrent_rpcs=_int(env, "KAIREON_GRPC_MAX_CONCURRENT_RPCS", 1000),
            health_interval=_float(env, "KAIREON_HEALTH_INTERVAL", 2.0),
            shutdown_grace=_float(env, "KAIREON_SHUTDOWN_GRACE", 10.0),
            workers=_int(env, "KAIREON_WORKERS", 1, minimum=1),
            log_level=(env.get("KAIREON_LOG_LEVEL") or "INFO").upper(),
            tls_cert=_path(env, "KAIREON_TLS_CERT"),
            tls_key=_path(env, "KAIREON_TLS_KEY"),
            tls_client_ca=_path(env, "KAIREON_TLS_CLIENT_CA"),
            demo=demo,
            env=env,
        )
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ConfigurationError("KAIREON_TLS_CERT and KAIREON_TLS_KEY go together")
        if settings.tls_client_ca is not None and settings.tls_cert is None:
            raise ConfigurationError("KAIREON_TLS_CLIENT_CA needs KAIREON_TLS_CERT/KEY")
        for tls_file in (settings.tls_cert, settings.tls_key, settings.tls_client_ca):
            if tls_file is not None and not tls_file.is_file():
                raise ConfigurationError(f"TLS file not found: {tls_file}")
        if settings.db_pool_min > settings.db_pool_max:
            raise ConfigurationError("KAIREON_DB_POOL_MIN must not exceed KAIREON_DB_POOL_MAX")
        if not settings.trust_headers and not settings.jwt.enabled:
            raise ConfigurationError(
                "no identity source: set KAIREON_TRUST_HEADERS=true (behind an authenticating "
                "gateway) or configure KAIREON_JWT_HS256_SECRET / KAIREON_JWT_PUBLIC_KEY"
            )
        return settings
