"""Settings from the environment. Every name is documented in the README table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kaireon_server.platform import event_loop as loops
from kaireon_server.platform.auth.proxies import TrustedProxies, TrustedProxiesError
from kaireon_server.platform.env import EnvReader, process_environment
from kaireon_server.platform.errors import ConfigurationError


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
    # uvloop or asyncio (platform/event_loop.py).
    event_loop: str = loops.DEFAULT
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
        env = dict(process_environment() if env is None else env)
        read = EnvReader(env)
        public_key = read.secret("KAIREON_JWT_PUBLIC_KEY")
        if public_key and not public_key.lstrip().startswith("-----BEGIN"):
            try:
                public_key = Path(public_key.strip()).read_text()
            except OSError as exc:
                raise ConfigurationError(
                    f"KAIREON_JWT_PUBLIC_KEY: cannot read key file ({exc.strerror})"
                ) from None
        jwt = JwtSettings(
            hs256_secret=read.secret("KAIREON_JWT_HS256_SECRET"),
            public_key_pem=public_key,
            issuer=read.optional_text("KAIREON_JWT_ISSUER"),
            audience=read.optional_text("KAIREON_JWT_AUDIENCE"),
            tenant_claim=read.text("KAIREON_JWT_TENANT_CLAIM", "tenant_id"),
            role_claim=read.text("KAIREON_JWT_ROLE_CLAIM", "role"),
        )
        try:
            trusted_proxies = TrustedProxies.parse(read.optional_text("KAIREON_TRUSTED_PROXIES"))
        except TrustedProxiesError as exc:
            raise ConfigurationError(str(exc)) from None
        statement_timeout_ms = read.integer("KAIREON_DB_STATEMENT_TIMEOUT_MS", 30_000, minimum=1)
        settings = cls(
            database_url=read.secret("DATABASE_URL"),
            app_database_url=read.secret("KAIREON_APP_DATABASE_URL"),
            app_database_password=read.secret("KAIREON_APP_DATABASE_PASSWORD"),
            data_dir=Path(read.text("KAIREON_DATA_DIR", ".kaireon")),
            grpc_host=read.text("KAIREON_GRPC_HOST", "0.0.0.0"),  # noqa: S104
            grpc_port=read.port("KAIREON_GRPC_PORT", 50051, allow_zero=True),
            # 0 or "off" = adapter off; "auto" = any free port.
            http_port=read.listen_port("KAIREON_HTTP_PORT", 8080, zero_is_off=True),
            # Bare identity headers are only trusted when asked for, or for the demo.
            trust_headers=read.boolean("KAIREON_TRUST_HEADERS", demo),
            trusted_proxies=trusted_proxies,
            jwt=jwt,
            db_pool_min=read.integer("KAIREON_DB_POOL_MIN", 2, minimum=1),
            db_pool_max=read.integer("KAIREON_DB_POOL_MAX", 10, minimum=1),
            db_acquire_timeout=read.number("KAIREON_DB_ACQUIRE_TIMEOUT", 5.0, exclusive_minimum=0),
            db_statement_timeout_ms=statement_timeout_ms,
            db_command_timeout=read.number(
                "KAIREON_DB_COMMAND_TIMEOUT", statement_timeout_ms / 1000 + 5.0, exclusive_minimum=0
            ),
            grpc_max_concurrent_rpcs=read.integer(
                "KAIREON_GRPC_MAX_CONCURRENT_RPCS", 1000, minimum=0
            ),
            health_interval=read.number("KAIREON_HEALTH_INTERVAL", 2.0, exclusive_minimum=0),
            shutdown_grace=read.number("KAIREON_SHUTDOWN_GRACE", 10.0, exclusive_minimum=0),
            workers=read.integer("KAIREON_WORKERS", 1, minimum=1),
            event_loop=loops.from_env(read),
            # Checked here: logging.setLevel would raise a bare ValueError later.
            log_level=read.choice(
                "KAIREON_LOG_LEVEL",
                "INFO",
                ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "NOTSET"),
                normalise=str.upper,
            ),
            tls_cert=read.path("KAIREON_TLS_CERT"),
            tls_key=read.path("KAIREON_TLS_KEY"),
            tls_client_ca=read.path("KAIREON_TLS_CLIENT_CA"),
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
