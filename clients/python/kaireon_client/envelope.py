"""The DSAR export's encrypted envelope: AES-256-GCM with versioned, rotatable keys.

The server encrypts with it (streaming, chunk by chunk); `kaireon dsar decrypt`
and `decrypt_envelope` / `decrypt_file` undo it offline. The envelope is RFC 8785
canonical JSON, like the plain export it wraps::

    {"data": {"ciphertext": base64(nonce[12] || ciphertext || tag[16]),
              "format": "encrypted-aes-256-gcm",
              "keyVersion": "v2",
              "tenantId": "acme"},
     "encrypted": true,
     "exportedAt": "2026-01-01T00:00:00.000000Z",
     "requestId": "<uuid>"}

The plaintext is the plain export document. The authenticated data is the
canonical JSON of {"keyVersion", "requestId", "tenantId"}: editing any of them,
or decrypting the envelope as another tenant's or request's, fails
authentication. Keys come from configuration as "v1:<base64 32 bytes>,v2:…";
the active version (new envelopes) is KAIREON_ENCRYPTION_ACTIVE_KEY or the last
one listed; older versions stay listed so their envelopes still decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kaireon_client import strict_json

FORMAT = "encrypted-aes-256-gcm"
KEYS_ENV = "KAIREON_ENCRYPTION_KEYS"
KEYS_FILE_ENV = "KAIREON_ENCRYPTION_KEYS_FILE"
ACTIVE_ENV = "KAIREON_ENCRYPTION_ACTIVE_KEY"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32

_VERSION = re.compile(r"[A-Za-z0-9._-]{1,32}")
_BLOCK = 3 * 256 * 1024  # plaintext bytes per base64 step (a multiple of 3)
_CIPHERTEXT_START = re.compile(rb'"ciphertext"\s*:\s*"')
_URLSAFE = str.maketrans("-_", "+/")


class EnvelopeError(Exception):
    """The envelope or the key configuration is unusable; the message says why."""


class AuthenticationFailed(EnvelopeError):
    """The GCM tag did not verify: tampered bytes, wrong key, or another tenant/request."""


@dataclass(frozen=True)
class KeyRing:
    """Versioned AES-256 keys. `repr` never shows key bytes."""

    keys: Mapping[str, bytes] = field(repr=False)
    active: str

    @classmethod
    def parse(cls, spec: str, active: str | None = None) -> KeyRing:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for position, item in enumerate(p.strip() for p in spec.split(",")):
            if not item:
                continue
            version, sep, encoded = item.partition(":")
            version = version.strip()
            if not sep or not _VERSION.fullmatch(version):
                raise EnvelopeError(
                    f"encryption key #{position + 1}: expected '<version>:<base64 key>' with a "
                    "version of 1-32 characters [A-Za-z0-9._-]"
                )
            if version in keys:
                raise EnvelopeError(f"encryption key version {version!r} is listed twice")
            keys[version] = _decode_key(version, encoded.strip())
            order.append(version)
        if not keys:
            raise EnvelopeError("no encryption keys configured")
        chosen = (active or "").strip() or order[-1]
        if chosen not in keys:
            raise EnvelopeError(f"active encryption key version {chosen!r} is not configured")
        return cls(keys, chosen)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KeyRing | None:
        """The key ring configured in `env` (os.environ by default), or None if none is."""
        env = os.environ if env is None else env
        spec = env.get(KEYS_ENV, "")
        path = env.get(KEYS_FILE_ENV, "")
        if not spec and path:
            try:
                spec = Path(path).read_text()
            except OSError as exc:
                raise EnvelopeError(f"{KEYS_FILE_ENV}: cannot read ({exc.strerror})") from None
        if not spec.strip():
            return None
        return cls.parse(spec, env.get(ACTIVE_ENV))

    def key(self, version: str) -> bytes:
        try:
            return self.keys[version]
        except KeyError:
            raise EnvelopeError(
                f"key version {version!r} is not in the key ring (configured: "
                f"{', '.join(sorted(self.keys))})"
            ) from None


def _decode_key(version: str, encoded: str) -> bytes:
    # Standard or URL-safe alphabet, padding optional.
    text = encoded.translate(_URLSAFE).rstrip("=")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"encryption key {version!r} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise EnvelopeError(f"encryption key {version!r} must be {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def associated_data(tenant_id: str, request_id: str, key_version: str) -> bytes:
    """What each envelope is bound to (authenticated, not encrypted)."""
    return bytes(
        rfc8785.dumps({"keyVersion": key_version, "requestId": request_id, "tenantId": tenant_id})
    )


def _json(value: Any) -> bytes:
    return bytes(rfc8785.dumps(value))


class EnvelopeWriter:
    """Encrypts a stream of plaintext into the bytes of a canonical envelope.

    `start()`, then `update()` per plaintext piece, then `finish()`; the
    concatenated outputs are the envelope. Memory stays at one piece.
    """

    def __init__(
        self, keyring: KeyRing, *, tenant_id: str, request_id: str, exported_at: str
    ) -> None:
        self.key_version = keyring.active
        self._tenant_id = tenant_id
        self._request_id = request_id
        self._exported_at = exported_at
        nonce = os.urandom(NONCE_BYTES)
        self._encryptor = Cipher(
            algorithms.AES(keyring.key(self.key_version)), modes.GCM(nonce)
        ).encryptor()
        self._encryptor.authenticate_additional_data(
            associated_data(tenant_id, request_id, self.key_version)
        )
        # The nonce leads the base64 blob; base64 consumes whole 3-byte groups.
        self._pending = bytearray(nonce)

    def start(self) -> bytes:
        return b'{"data":{"ciphertext":"'

    def update(self, plaintext: bytes) -> bytes:
        self._pending += self._encryptor.update(plaintext)
        usable = len(self._pending) - len(self._pending) % 3
        if usable == 0:
            return b""
        out = base64.b64encode(self._pending[:usable])
        del self._pending[:usable]
        return out

    def finish(self) -> bytes:
        self._pending += self._encryptor.finalize()
        self._pending += self._encryptor.tag
        out = base64.b64encode(bytes(self._pending))
        self._pending.clear()
        return (
            out
            + b'","format":'
            + _json(FORMAT)
            + b',"keyVersion":'
            + _json(self.key_version)
            + b',"tenantId":'
            + _json(self._tenant_id)
            + b'},"encrypted":true,"exportedAt":'
            + _json(self._exported_at)
            + b',"requestId":'
            + _json(self._request_id)
            + b"}"
        )


def encrypt_document(
    plaintext: bytes, keyring: KeyRing, *, tenant_id: str, request_id: str, exported_at: str
) -> bytes:
    """The envelope of `plaintext` in one call (small documents, tests)."""
    writer = EnvelopeWriter(
        keyring, tenant_id=tenant_id, request_id=request_id, exported_at=exported_at
    )
    return writer.start() + writer.update(plaintext) + writer.finish()


@dataclass(frozen=True)
class EnvelopeInfo:
    """The clear-text fields of an envelope."""

    key_version: str
    tenant_id: str
    request_id: str
    exported_at: str


def _info(document: Mapping[str, Any]) -> EnvelopeInfo:
    data = document.get("data")
    if document.get("encrypted") is not True or not isinstance(data, Mapping):
        raise EnvelopeError("not an encrypted envelope (expected encrypted: true and data)")
    if data.get("format") != FORMAT:
        raise EnvelopeError(f"unsupported envelope format {data.get('format')!r}")
    fields = {
        "key_version": data.get("keyVersion"),
        "tenant_id": data.get("tenantId"),
        "request_id": document.get("requestId"),
        "exported_at": document.get("exportedAt", ""),
    }
    for name, value in fields.items():
        if not isinstance(value, str) or (not value and name != "exported_at"):
            raise EnvelopeError(f"envelope field {name} is missing or not a string")
    return EnvelopeInfo(**fields)


def _decryptor(
    keyring: KeyRing,
    info: EnvelopeInfo,
    nonce: bytes,
    tenant_id: str | None,
    request_id: str | None,
) -> Any:
    # Expected bindings replace the envelope's own: a moved envelope then fails.
    aad = associated_data(
        tenant_id or info.tenant_id, request_id or info.request_id, info.key_version
    )
    decryptor = Cipher(algorithms.AES(keyring.key(info.key_version)), modes.GCM(nonce)).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor


_AUTH_MESSAGE = (
    "authentication failed: the envelope was modified, belongs to another tenant or request, "
    "or the key for its version is wrong"
)


def decrypt_envelope(
    envelope: Mapping[str, Any] | bytes,
    keyring: KeyRing,
    *,
    tenant_id: str | None = None,
    request_id: str | None = None,
) -> bytes:
    """The plaintext export of an in-memory envelope (parsed JSON or its bytes)."""
    document = strict_json.loads(envelope) if isinstance(envelope, bytes | bytearray) else envelope
    if not isinstance(document, Mapping):
        raise EnvelopeError("not an encrypted envelope (expected a JSON object)")
    info = _info(document)
    blob = _b64(document["data"].get("ciphertext"))
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError("ciphertext is too short")
    decryptor = _decryptor(keyring, info, blob[:NONCE_BYTES], tenant_id, request_id)
    plaintext = decryptor.update(blob[NONCE_BYTES:-TAG_BYTES])
    try:
        return bytes(plaintext + decryptor.finalize_with_tag(blob[-TAG_BYTES:]))
    except InvalidTag:
        raise AuthenticationFailed(_AUTH_MESSAGE) from None


def _b64(value: Any) -> bytes:
    if not isinstance(value, str | bytes):
        raise EnvelopeError("ciphertext is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("ciphertext is not valid base64") from None


def _locate_ciphertext(src: BinaryIO) -> tuple[int, int]:
    """Byte range of the ciphertext string's contents (base64 has no quotes)."""
    head = src.read(4096)
    match = _CIPHERTEXT_START.search(head)
    if match is None:
        raise EnvelopeError("not an encrypted envelope (no data.ciphertext near the start)")
    start = match.end()
    src.seek(start)
    position = start
    while block := src.read(1 << 20):
        quote = block.find(b'"')
        if quote >= 0:
            return start, position + quote
        position += len(block)
    raise EnvelopeError("truncated envelope: the ciphertext string never ends")


def decrypt_file(
    src: Path,
    dst: Path,
    keyring: KeyRing,
    *,
    tenant_id: str | None = None,
    request_id: str | None = None,
) -> EnvelopeInfo:
    """Decrypt the envelope in `src` into `dst`, streaming with bounded memory.

    The plaintext is written to a temporary file beside `dst` and moved into
    place only once the tag verifies, so a tampered envelope leaves no output.
    """
    with open(src, "rb") as f:
        start, end = _locate_ciphertext(f)
        f.seek(0)
        prefix = f.read(start)
        f.seek(end)
        suffix = f.read()
        try:
            # Parse the envelope with an empty ciphertext: the small clear part.
            info = _info(strict_json.loads(prefix + suffix))
        except (ValueError, UnicodeDecodeError):
            raise EnvelopeError("not an encrypted envelope (invalid JSON)") from None
        total = end - start
        if total % 4 or total < 4 * ((NONCE_BYTES + TAG_BYTES + 2) // 3):
            raise EnvelopeError("ciphertext is not valid base64 or is too short")
        f.seek(start)
        nonce_text = f.read(16)  # 12 nonce bytes are the first 16 base64 characters
        nonce = _b64(nonce_text)
        decryptor = _decryptor(keyring, info, nonce, tenant_id, request_id)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                tail = b""
                remaining = total - 16
                while remaining > 0:
                    text = f.read(min(remaining, 4 * (_BLOCK // 3)))
                    if not text:
                        raise EnvelopeError("truncated envelope")
                    remaining -= len(text)
                    raw = tail + _b64(text)
                    # The last 16 bytes may be the tag: hold them back until the end.
                    out.write(decryptor.update(raw[:-TAG_BYTES]))
                    tail = raw[-TAG_BYTES:]
                try:
                    out.write(decryptor.finalize_with_tag(tail))
                except InvalidTag:
                    raise AuthenticationFailed(_AUTH_MESSAGE) from None
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return info
