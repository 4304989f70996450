"""C2SP tlog-cosignature v1 (Ed25519): a witness's timestamped checkpoint signature.

The signature line is an ordinary note signature whose key id uses type 0x04, and
whose bytes are `u64 timestamp (big-endian) || Ed25519 signature` over

    cosignature/v1\\n
    time <timestamp>\\n
    <the checkpoint body>

The message does not commit to the cosigner's name, so one key must serve one
cosigner only (the specification's rule).
"""

from __future__ import annotations

import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kaireon_client.tlog.checkpoint import parse_checkpoint
from kaireon_client.tlog.note import (
    SIG_ED25519_COSIGNATURE,
    NoteError,
    Signature,
    check_key_name,
    format_vkey,
    key_id,
    parse_vkey_parts,
)

__all__ = [
    "CosignatureSigner",
    "CosignatureVerifier",
    "cosigned_message",
    "parse_cosignature_vkey",
]

MAX_TIMESTAMP = 2**63 - 1


def cosigned_message(checkpoint_body: str, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs (the body must be a valid checkpoint)."""
    parse_checkpoint(checkpoint_body)
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is out of range")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_body}".encode()


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class CosignatureVerifier:
    """A pinned witness key (vkey type 0x04); `verify` checks one cosignature line."""

    sig_type = SIG_ED25519_COSIGNATURE

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        self._name = check_key_name(name)
        self.public_key = public_key
        self._key_id = key_id(name, self.sig_type, _raw(public_key))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def timestamp(self, signature: bytes) -> int:
        if len(signature) != 8 + 64:
            raise NoteError("a cosignature is an 8-byte timestamp and a 64-byte signature")
        return int.from_bytes(signature[:8], "big")

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 8 + 64:
            return False
        stamp = int.from_bytes(signature[:8], "big")
        try:
            message = cosigned_message(text.decode(), stamp)
        except (ValueError, UnicodeDecodeError):
            return False
        try:
            self.public_key.verify(signature[8:], message)
        except InvalidSignature:
            return False
        return True

    def vkey(self) -> str:
        return format_vkey(self._name, self.sig_type, _raw(self.public_key))


class CosignatureSigner:
    """A witness key that makes v1 cosignatures."""

    sig_type = SIG_ED25519_COSIGNATURE

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._name = check_key_name(name)
        self.private_key = private_key
        self._key_id = key_id(name, self.sig_type, _raw(private_key.public_key()))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def cosign(self, checkpoint_body: str, timestamp: int | None = None) -> Signature:
        stamp = int(time.time()) if timestamp is None else timestamp
        message = cosigned_message(checkpoint_body, stamp)
        raw = stamp.to_bytes(8, "big") + self.private_key.sign(message)
        return Signature(self._name, self._key_id, raw)

    def sign(self, text: bytes) -> bytes:
        """The `Signer` interface (note.sign_note): a cosignature stamped now."""
        return self.cosign(text.decode()).signature

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self._name, self.private_key.public_key())

    def vkey(self) -> str:
        return self.verifier().vkey()


def parse_cosignature_vkey(vkey: str) -> CosignatureVerifier:
    """A type-0x04 vkey (a witness's key)."""
    name, _, sig_type, public = parse_vkey_parts(vkey)
    if sig_type != SIG_ED25519_COSIGNATURE:
        raise NoteError(
            f"vkey of {name!r} is of type 0x{sig_type:02x}, not an Ed25519 cosignature (0x04)"
        )
    if len(public) != 32:
        raise NoteError("an Ed25519 public key is 32 bytes")
    return CosignatureVerifier(name, Ed25519PublicKey.from_public_bytes(public))
