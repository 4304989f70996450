"""The service's signatures as a verifier sees them: ECDSA P-256 over SHA-256.

Bundles, DSAR export packages and erasure receipts are signed with the
service's key (`COSIGN_KEY`, as `cosign sign-blob --key` would); the signature
is base64 DER over the artefact bytes, or the word "unsigned" when the service
has no key. A key id is the sha256 hex of the key's DER SubjectPublicKeyInfo.
The server's signer takes these constants and the key id from here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ALGORITHM", "UNSIGNED", "load_public_key", "public_key_id", "verify_signature"]

UNSIGNED = "unsigned"
ALGORITHM = "ecdsa-p256-sha256"


def load_public_key(pem: str | bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key of a PEM; ValueError for anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the public key must be an ECDSA P-256 key")
    return key


def public_key_id(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def verify_signature(body: bytes, signature_b64: str, public_key_pem: str | bytes) -> bool:
    """True when `signature_b64` is an ECDSA P-256 SHA-256 signature of `body`."""
    if signature_b64.strip() == UNSIGNED:
        return False
    try:
        key = load_public_key(public_key_pem)
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (ValueError, binascii.Error):
        return False
    try:
        key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
