"""DsarService settings, read from the raw environment (`Settings.env`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kaireon_client.envelope import EnvelopeError, KeyRing
from kaireon_server.platform.env import EnvReader
from kaireon_server.platform.errors import ConfigurationError

MiB = 1024 * 1024


@dataclass(frozen=True)
class DsarSettings:
    # Exports up to this size are attached to Get/List responses; larger ones are linked.
    inline_limit_bytes: int = 1 * MiB
    # Exports attached to one List response stay under this (the gRPC limit is 16 MiB).
    list_inline_budget_bytes: int = 8 * MiB
    # Stored chunk size = download message size; well under the gRPC message limit.
    chunk_bytes: int = 1 * MiB
    # Exports running at once per server process (claimed as the queue fills);
    # 0 serves the API only.
    workers: int = 4
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    # Fallback poll for work when no notification arrives (notifications are the fast path).
    poll_seconds: float = 2.0
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    # Pause after each stored chunk: caps the I/O an export takes from the database.
    throttle_seconds: float = 0.0
    # Statement timeout of the export's read (0 = none): large subjects take long.
    export_statement_timeout_ms: int = 0
    keyring: KeyRing | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DsarSettings:
        try:
            keyring = KeyRing.from_env(env)
        except EnvelopeError as exc:
            # The message names versions and lengths only, never key bytes.
            raise ConfigurationError(f"KAIREON_ENCRYPTION_KEYS: {exc}") from None
        read = EnvReader(env)

        def number_in(name: str, default: float, low: float, high: float) -> float:
            return read.number(name, default, minimum=low, maximum=high)

        def integer_in(name: str, default: int, low: int, high: int) -> int:
            return read.integer(name, default, minimum=low, maximum=high)

        lease = number_in("KAIREON_DSAR_LEASE_SECONDS", 30.0, 1.0, 3600.0)
        settings = cls(
            inline_limit_bytes=integer_in("KAIREON_DSAR_INLINE_LIMIT_BYTES", MiB, 0, 4 * MiB),
            list_inline_budget_bytes=integer_in(
                "KAIREON_DSAR_LIST_INLINE_BUDGET_BYTES", 8 * MiB, 0, 12 * MiB
            ),
            chunk_bytes=integer_in("KAIREON_DSAR_CHUNK_BYTES", MiB, 1024, 8 * MiB),
            workers=integer_in("KAIREON_DSAR_WORKERS", 4, 0, 64),
            lease_seconds=lease,
            heartbeat_seconds=number_in(
                "KAIREON_DSAR_HEARTBEAT_SECONDS", min(10.0, lease / 3), 0.1, lease
            ),
            poll_seconds=number_in("KAIREON_DSAR_POLL_SECONDS", 2.0, 0.05, 600.0),
            max_attempts=integer_in("KAIREON_DSAR_MAX_ATTEMPTS", 5, 1, 100),
            retry_base_seconds=number_in("KAIREON_DSAR_RETRY_BASE_SECONDS", 2.0, 0.0, 3600.0),
            retry_max_seconds=number_in("KAIREON_DSAR_RETRY_MAX_SECONDS", 300.0, 0.0, 86400.0),
            throttle_seconds=number_in("KAIREON_DSAR_THROTTLE_MS", 0.0, 0.0, 60_000.0) / 1000,
            export_statement_timeout_ms=integer_in(
                "KAIREON_DSAR_EXPORT_STATEMENT_TIMEOUT_MS", 0, 0, 86_400_000
            ),
            keyring=keyring,
        )
        if settings.heartbeat_seconds >= settings.lease_seconds:
            raise ConfigurationError(
                "KAIREON_DSAR_HEARTBEAT_SECONDS must be shorter than KAIREON_DSAR_LEASE_SECONDS"
            )
        return settings
