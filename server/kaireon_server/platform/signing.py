"""The service's signing key (COSIGN_KEY): ECDSA P-256 over SHA-256, as `cosign sign-blob --key`.

The key comes from configuration only (a PEM path or the PEM itself), never from
the database, and is never logged. Without a key the service signs nothing and
says "unsigned", so consumers can refuse unsigned artifacts.

Two key formats are read: a PEM private key (PKCS#8 or SEC 1, encrypted with
COSIGN_PASSWORD or not), and the file `cosign generate-key-pair` writes
("ENCRYPTED SIGSTORE PRIVATE KEY", or "ENCRYPTED COSIGN PRIVATE KEY" from
cosign 1.x): a JSON envelope from go-securesystemslib's `encrypted` package,
scrypt-derived key + NaCl secretbox around the PKCS#8 DER key, opened with
COSIGN_PASSWORD (cosign allows an empty one).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from kaireon_client.signing import ALGORITHM, UNSIGNED, public_key_id
from kaireon_server.platform.env import EnvReader
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.platform.observability import metrics

# The formats are the client's, which verifies what this signs.
__all__ = [
    "ALGORITHM",
    "UNSIGNED",
    "EcdsaSigner",
    "NullSigner",
    "Signer",
    "private_key_from_env",
    "signer_from_env",
]

COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
# The scrypt cost sets go-securesystemslib writes (legacy, standard, OWASP).
# Anything else is refused: an attacker-chosen N could make start-up hang.
COSIGN_SCRYPT_PARAMS = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?P<type>[A-Z0-9 ]+)-----\s*"
    rb"(?P<body>[A-Za-z0-9+/=\s]*?)\s*-----END (?P=type)-----"
)


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
        self._key_id = public_key_id(public)
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
        began = time.perf_counter()
        try:
            signature = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        except Exception:
            metrics.SIGNING_ERRORS.inc()
            raise
        metrics.SIGNING.observe(time.perf_counter() - began)
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


def _pem_type(pem: bytes) -> str | None:
    match = _PEM_BLOCK.search(pem)
    return match.group("type").decode() if match else None


def _b64field(envelope: Mapping[str, object], *path: str) -> bytes:
    value: object = envelope
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            raise ValueError("/".join(path))
        value = value[name]
    if not isinstance(value, str):
        raise ValueError("/".join(path))
    return base64.b64decode(value, validate=True)


def load_cosign_private_key(pem: bytes, password: bytes) -> ec.EllipticCurvePrivateKey:
    """Open cosign's encrypted private key (see the module docstring)."""
    match = _PEM_BLOCK.search(pem)
    if match is None or match.group("type").decode() not in COSIGN_PEM_TYPES:
        raise ConfigurationError("COSIGN_KEY is not a cosign encrypted private key")
    try:
        envelope = json.loads(base64.b64decode(b"".join(match.group("body").split())))
        kdf, cipher = envelope["kdf"], envelope["cipher"]
        if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
            raise ConfigurationError("COSIGN_KEY: unsupported kdf or cipher")
        params = kdf["params"]
        cost = (params["N"], params["r"], params["p"])
        if not all(type(v) is int for v in cost) or cost not in COSIGN_SCRYPT_PARAMS:
            raise ConfigurationError("COSIGN_KEY: unsupported scrypt parameters")
        salt = _b64field(envelope, "kdf", "salt")
        nonce = _b64field(envelope, "cipher", "nonce")
        ciphertext = _b64field(envelope, "ciphertext")
    except ConfigurationError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise ConfigurationError("COSIGN_KEY: malformed cosign key envelope") from None
    if len(nonce) != SecretBox.NONCE_SIZE:
        raise ConfigurationError("COSIGN_KEY: malformed cosign key envelope")
    n, r, p = cost
    secret = Scrypt(salt=salt, length=SecretBox.KEY_SIZE, n=n, r=r, p=p).derive(password)
    try:
        der = SecretBox(secret).decrypt(ciphertext, nonce)
    except CryptoError:
        # Wrong password and tampered file look alike, as they should.
        raise ConfigurationError(
            "COSIGN_KEY could not be decrypted: wrong COSIGN_PASSWORD or damaged key"
        ) from None
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError("COSIGN_KEY: the decrypted key is not PKCS#8") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError("COSIGN_KEY must be an ECDSA P-256 private key")
    return key


def private_key_from_env(env: Mapping[str, str]) -> ec.EllipticCurvePrivateKey | None:
    """The service key: COSIGN_KEY (PEM text or a file path) and COSIGN_PASSWORD; None if unset.

    The one reader of those variables: the provenance signer and the DSAR export
    signer (dsar/store.py) both load the key through it.
    """
    read = EnvReader(env)
    raw = read.secret("COSIGN_KEY")
    if raw is None:
        return None
    if raw.lstrip().startswith("-----BEGIN"):
        pem = raw.encode()
    else:
        try:
            pem = Path(raw.strip()).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"COSIGN_KEY: cannot read key file ({exc.strerror})") from None
    password = read.secret("COSIGN_PASSWORD")
    if _pem_type(pem) in COSIGN_PEM_TYPES:
        return load_cosign_private_key(pem, (password or "").encode())
    return load_private_key(pem, password.encode() if password else None)


def signer_from_env(env: Mapping[str, str]) -> Signer:
    key = private_key_from_env(env)
    return NullSigner() if key is None else EcdsaSigner(key)
