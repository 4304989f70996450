"""Turns request metadata into an Identity: a verified bearer JWT, or trusted headers.

Identity comes from one source per call, and is never resolved from conflicting
input: a repeated identity key, a token next to identity headers, or identity
headers from a peer outside KAIREON_TRUSTED_PROXIES are refused (UNAUTHENTICATED).
Every token problem is UNAUTHENTICATED too; the token itself is never logged.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from kaireon_server.platform.auth.identity import Identity, Role, validate_tenant
from kaireon_server.platform.auth.proxies import TrustedProxies
from kaireon_server.platform.config import JwtSettings
from kaireon_server.platform.errors import ConfigurationError, Unauthenticated

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
TENANT_HEADER = "x-tenant-id"
ROLE_HEADER = "x-user-role"
IDENTITY_HEADERS = (TENANT_HEADER, ROLE_HEADER)
# Metadata keys that carry identity: exactly one value each, or none.
IDENTITY_KEYS = frozenset({AUTHORIZATION, *IDENTITY_HEADERS})

# A compact JWS: three base64url parts. Anything else is refused before decoding.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_MAX_TOKEN_CHARS = 8192
_TIME_CLAIMS = ("exp", "nbf", "iat")
# Printable ASCII without spaces (a subject is written to audit rows).
_SUBJECT = re.compile(r"[\x21-\x7e]{1,255}")

Metadata = Mapping[str, str] | Iterable[tuple[str, str | bytes]]


def _algorithm_for_key(pem: str) -> str:
    """The one algorithm a public key verifies; the token header cannot choose another."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ConfigurationError("KAIREON_JWT_PUBLIC_KEY is not a PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ConfigurationError("KAIREON_JWT_PUBLIC_KEY must be an EC P-256 or Ed25519 public key")


class Authenticator:
    def __init__(
        self,
        jwt_settings: JwtSettings,
        *,
        trust_headers: bool,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self._jwt = jwt_settings
        self._trust_headers = trust_headers
        self._proxies = trusted_proxies or TrustedProxies.parse(None)
        if jwt_settings.public_key_pem:
            self._key: str = jwt_settings.public_key_pem
            self._algorithm = _algorithm_for_key(jwt_settings.public_key_pem)
        else:
            self._key = jwt_settings.hs256_secret or ""
            self._algorithm = "HS256"

    def authenticate(self, metadata: Metadata, peer: str | None = None) -> Identity:
        """The caller's identity from the call's metadata and its peer address.

        `peer` is the gRPC peer ("ipv4:127.0.0.1:5000"); without one, identity
        headers are not trusted.
        """
        values = _identity_values(metadata)
        authorization = values.get(AUTHORIZATION)
        has_headers = any(key in values for key in IDENTITY_HEADERS)
        if authorization is not None:
            if has_headers:
                raise Unauthenticated(
                    "send a bearer token or identity headers, not both",
                    reason="AMBIGUOUS_IDENTITY",
                )
            if not self._jwt.enabled:
                raise Unauthenticated(
                    "bearer tokens are not accepted by this deployment", reason="JWT_DISABLED"
                )
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("authorization must be 'Bearer <token>'", reason="BAD_AUTH")
            return self._from_token(token)
        if self._trust_headers:
            if has_headers and not self._proxies.allows_grpc_peer(peer):
                raise Unauthenticated(
                    "identity headers are accepted only from trusted proxies",
                    reason="UNTRUSTED_PEER",
                )
            return _from_headers(values)
        raise Unauthenticated("missing bearer token", reason="MISSING_CREDENTIALS")

    def _from_token(self, token: str) -> Identity:
        if len(token) > _MAX_TOKEN_CHARS or not _COMPACT_JWS.fullmatch(token):
            raise Unauthenticated("invalid token: not a compact JWS", reason="INVALID_TOKEN")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=self._jwt.issuer,
                audience=self._jwt.audience,
                # Times are checked below: PyJWT would accept "exp": "1e10" and true.
                options={
                    "require": ["exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            # PyJWT's message names the failed check, never the token.
            raise Unauthenticated(f"invalid token: {exc}", reason="INVALID_TOKEN") from None
        except Exception as exc:
            # E.g. InvalidKeyError for an alg/key mismatch, binascii errors: not a server fault.
            log.info("token refused", extra={"error_type": type(exc).__name__})
            raise Unauthenticated("invalid token", reason="INVALID_TOKEN") from None
        return self._identity_from_claims(claims)

    def _identity_from_claims(self, claims: dict[str, Any]) -> Identity:
        _check_times(claims)
        tenant = claims.get(self._jwt.tenant_claim)
        role = claims.get(self._jwt.role_claim)
        if not isinstance(tenant, str) or not isinstance(role, str):
            raise Unauthenticated("token lacks tenant or role claims", reason="INVALID_TOKEN")
        subject = claims.get("sub", "token")
        if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
            raise Unauthenticated(
                "invalid token: sub must be 1-255 printable characters", reason="INVALID_TOKEN"
            )
        return Identity(validate_tenant(tenant), Role.parse(role), subject)


def _identity_values(metadata: Metadata) -> dict[str, str]:
    """The identity keys present, each with its single value; a repeated key is refused."""
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
    values: dict[str, str] = {}
    for key, value in pairs:
        name = key.lower()
        if name not in IDENTITY_KEYS:
            continue
        if name in values:
            raise Unauthenticated(f"{name} given more than once", reason="DUPLICATE_IDENTITY")
        if not isinstance(value, str):
            raise Unauthenticated(f"{name} must be text", reason="INVALID_IDENTITY")
        values[name] = value
    return values


def _from_headers(values: Mapping[str, str]) -> Identity:
    tenant = values.get(TENANT_HEADER, "")
    if not tenant:
        raise Unauthenticated("missing x-tenant-id", reason="MISSING_TENANT")
    role_text = values.get(ROLE_HEADER, "")
    if not role_text:
        raise Unauthenticated("missing x-user-role", reason="MISSING_ROLE")
    role = Role.parse(role_text)
    return Identity(validate_tenant(tenant), role, f"{role.name.lower()}@headers")


def _check_times(claims: Mapping[str, Any]) -> None:
    """exp (required), nbf and iat: JSON numbers only, and exp/nbf checked against now."""
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        # bool is an int in Python; a JSON true is not a time.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthenticated(f"invalid token: {name} must be a number", reason="INVALID_TOKEN")
        if not math.isfinite(value):
            raise Unauthenticated(f"invalid token: {name} must be finite", reason="INVALID_TOKEN")
    now = time.time()
    if claims["exp"] <= now:
        raise Unauthenticated("token expired", reason="TOKEN_EXPIRED")
    if "nbf" in claims and claims["nbf"] > now:
        raise Unauthenticated("token not yet valid", reason="INVALID_TOKEN")
