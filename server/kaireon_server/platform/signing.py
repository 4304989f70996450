"""The service's signing key (COSIGN_KEY): ECDSA P-256 over SHA-256, as `cosign sign-blob --key`.

The key comes from configuration only (a PEM path or the PEM itself), never from
the database, and is never logged. Without a key the service signs nothing and
says "unsigned", so consumers can refuse unsigned artifacts.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon_server.platform.errors import ConfigurationError

UNSIGNED = "unsigned"
ALGORITHM = "ecdsa-p256-sha256"


class Signer(Protocol):
    """Signs bytes; `signature` is base64 DER ECDSA or "unsigned"."""

    @property
    def key_id(self) -> str: ...

    @property
    def public_key_pem(self) -> str: ...

    def sign(self, data: bytes) -> str: ...


class NullSigner:
    key_id = ""
    public_key_pem = ""

    def sign(self, data: bytes) -> str:
        return UNSIGNED


class EcdsaSigner:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigurationError("COSIGN_KEY must be an ECDSA P-256 key")
        self._key = private_key
        public = private_key.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = hashlib.sha256(der).hexdigest()
        self._public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key_pem(self) -> str:
        return self._public_pem

    def sign(self, data: bytes) -> str:
        signature = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    def __repr__(self) -> str:  # never print key material
        return f"EcdsaSigner(key_id={self._key_id[:16]}…)"


def load_private_key(pem: bytes, password: bytes | None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        # The exception text never includes key bytes, but keep it generic anyway.
        raise ConfigurationError(f"COSIGN_KEY could not be loaded: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError("COSIGN_KEY must be an ECDSA P-256 private key")
    return key


def signer_from_env(env: Mapping[str, str]) -> Signer:
    raw = env.get("COSIGN_KEY") or ""
    if not raw:
        return NullSigner()
    if raw.lstrip().startswith("-----BEGIN"):
        pem = raw.encode()
    else:
        try:
            pem = Path(raw).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"COSIGN_KEY: cannot read key file ({exc.strerror})") from None
    password = env.get("COSIGN_PASSWORD")
    return EcdsaSigner(load_private_key(pem, password.encode() if password else None))


def verify_signature(public_key_pem: str, data: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` is a valid ECDSA P-256 SHA-256 signature of `data`."""
    if signature_b64 == UNSIGNED:
        return False
    key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
