"""Turns request metadata into an Identity: a verified bearer JWT, or trusted headers."""

from __future__ import annotations

from collections.abc import Mapping

import jwt

from kaireon_server.platform.auth.identity import Identity, Role, validate_tenant
from kaireon_server.platform.config import JwtSettings
from kaireon_server.platform.errors import Unauthenticated

_ALGORITHMS_FOR_KEY = ["ES256", "EdDSA"]


class Authenticator:
    def __init__(self, jwt_settings: JwtSettings, *, trust_headers: bool) -> None:
        self._jwt = jwt_settings
        self._trust_headers = trust_headers

    def authenticate(self, metadata: Mapping[str, str]) -> Identity:
        authorization = metadata.get("authorization", "")
        if authorization:
            if not self._jwt.enabled:
                raise Unauthenticated(
                    "bearer tokens are not accepted by this deployment", reason="JWT_DISABLED"
                )
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization must be 'Bearer <token>'", reason="BAD_AUTH")
            return self._from_token(token.strip())
        if self._trust_headers:
            return self._from_headers(metadata)
        raise Unauthenticated("missing bearer token", reason="MISSING_CREDENTIALS")

    def _from_headers(self, metadata: Mapping[str, str]) -> Identity:
        tenant = metadata.get("x-tenant-id", "").strip()
        if not tenant:
            raise Unauthenticated("missing x-tenant-id", reason="MISSING_TENANT")
        role_text = metadata.get("x-user-role", "").strip()
        if not role_text:
            raise Unauthenticated("missing x-user-role", reason="MISSING_ROLE")
        role = Role.parse(role_text)
        return Identity(validate_tenant(tenant), role, f"{role.name.lower()}@headers")

    def _from_token(self, token: str) -> Identity:
        options: jwt.types.Options = {"require": ["exp"]}
        try:
            if self._jwt.public_key_pem:
                claims = jwt.decode(
                    token,
                    self._jwt.public_key_pem,
                    algorithms=_ALGORITHMS_FOR_KEY,
                    issuer=self._jwt.issuer,
                    audience=self._jwt.audience,
                    options=options,
                )
            else:
                claims = jwt.decode(
                    token,
                    self._jwt.hs256_secret or "",
                    algorithms=["HS256"],
                    issuer=self._jwt.issuer,
                    audience=self._jwt.audience,
                    options=options,
                )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError as exc:
            # The exception names the failed check, never the token.
            raise Unauthenticated(f"invalid token: {exc}", reason="INVALID_TOKEN") from None
        tenant = claims.get(self._jwt.tenant_claim)
        role = claims.get(self._jwt.role_claim)
        if not isinstance(tenant, str) or not isinstance(role, str):
            raise Unauthenticated("token lacks tenant or role claims", reason="INVALID_TOKEN")
        subject = claims.get("sub")
        return Identity(
            validate_tenant(tenant), Role.parse(role), str(subject) if subject else "token"
        )
