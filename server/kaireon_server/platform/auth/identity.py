"""Who is calling: the tenant, the role and a subject for audit rows."""

from __future__ import annotations

import contextlib
import enum
import re
from contextvars import ContextVar
from dataclasses import dataclass

from kaireon_server.platform.errors import Unauthenticated

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class Role(enum.IntEnum):
    """Ordered roles; the values match kaireon.auth.v1.Role."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: object) -> Role:
        """Exactly one of the lower-case names: no case folding, no trimming."""
        role = _ROLES.get(text) if isinstance(text, str) else None
        if role is None:
            raise Unauthenticated(
                "unknown role: expected viewer, operator or admin", reason="INVALID_ROLE"
            )
        return role


_ROLES = {role.name.lower(): role for role in Role}


def validate_tenant(tenant_id: object) -> str:
    # fullmatch: `$` would also accept "demo\n", a second tenant for the same name.
    if not isinstance(tenant_id, str) or not _TENANT.fullmatch(tenant_id):
        raise Unauthenticated(
            "invalid tenant id: 1-63 characters of a-z, 0-9, '_' or '-'", reason="INVALID_TENANT"
        )
    return tenant_id


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    role: Role
    # Who acted, for audit rows: a token subject or "<role>@headers". Never a customer.
    subject: str

    @property
    def actor(self) -> str:
        return self.subject


_current: ContextVar[Identity | None] = ContextVar("kaireon_identity", default=None)


def current_identity() -> Identity:
    """The identity of the RPC being served (set by the auth interceptor)."""
    identity = _current.get()
    if identity is None:
        raise Unauthenticated("no caller identity", reason="MISSING_IDENTITY")
    return identity


def set_identity(identity: Identity | None) -> object:
    return _current.set(identity)


def reset_identity(token: object) -> None:
    # A streaming handler finalised in another context has nothing to restore.
    with contextlib.suppress(ValueError):
        _current.reset(token)  # type: ignore[arg-type]
