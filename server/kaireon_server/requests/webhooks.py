"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec v1).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`. Two schemes,
told apart by the stored secret's prefix (as the spec serialises them):

- symmetric, `v1`: base64(HMAC-SHA256(secret, content)); the secret is
  `whsec_` + base64 of 24 random bytes, shared with the processor;
- asymmetric, `v1a`: base64(Ed25519 signature of content); the server keeps
  the private key (`whsk_` + base64 of its 32-byte seed) and the processor
  verifies with the public key (`whpk_` + base64 of its 32 bytes).

Receivers verify with any Standard Webhooks implementation (the tests use the
`standardwebhooks` package for v1 and libsodium, through PyNaCl, for v1a).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX = "whsec_"
PRIVATE_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
HMAC, ED25519 = "hmac", "ed25519"
SCHEMES = (HMAC, ED25519)


def new_secret(scheme: str = HMAC) -> str:
    """What the server stores to sign with: a shared secret or a private key."""
    if scheme == ED25519:
        seed = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return PRIVATE_PREFIX + base64.b64encode(seed).decode()
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def scheme_of(secret: str) -> str:
    return ED25519 if secret.startswith(PRIVATE_PREFIX) else HMAC


def _private_key(secret: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        base64.b64decode(secret.removeprefix(PRIVATE_PREFIX))
    )


def public_key(secret: str) -> str:
    """The `whpk_` key a processor verifies v1a signatures with."""
    raw = (
        _private_key(secret)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    if scheme_of(secret) == ED25519:
        return "v1a," + base64.b64encode(_private_key(secret).sign(content)).decode()
    key = base64.b64decode(secret.removeprefix(PREFIX))
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }
