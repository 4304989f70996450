"""Client configuration: where the server is and who the caller is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs. `from_env` reads the KAIREON_* variables.

    Identity is either a bearer token (`token`) or the trusted headers
    (`tenant` + `role`) that deployments behind an authenticating gateway accept;
    not both: the server refuses a call carrying both (UNAUTHENTICATED).
    """

    target: str = "localhost:50051"
    tenant: str | None = None
    role: str | None = None
    token: str | None = field(default=None, repr=False)
    # Default deadline of unary calls, seconds; streams have none unless given per call.
    timeout: float = 30.0
    # TLS: a CA bundle turns TLS on; a client cert + key add mTLS.
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = field(default=None, repr=False)
    max_message_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ClientConfig:
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        values: dict[str, object] = {
            "target": env.get("KAIREON_TARGET") or "localhost:50051",
            "tenant": env.get("KAIREON_TENANT") or None,
            "role": env.get("KAIREON_ROLE") or None,
            "token": env.get("KAIREON_TOKEN") or None,
            "timeout": float(env.get("KAIREON_TIMEOUT") or 30.0),
            "ca_cert": path("KAIREON_CA_CERT"),
            "client_cert": path("KAIREON_CLIENT_CERT"),
            "client_key": path("KAIREON_CLIENT_KEY"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs: list[tuple[str, str]] = []
        if self.token:
            pairs.append(("authorization", f"Bearer {self.token}"))
        if self.tenant:
            pairs.append(("x-tenant-id", self.tenant))
        if self.role:
            pairs.append(("x-user-role", self.role))
        return tuple(pairs)
