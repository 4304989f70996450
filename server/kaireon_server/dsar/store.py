"""Where export bytes go: digest, optional encryption, chunked storage, signature.

`ChunkStore` cuts the byte stream into fixed-size chunks and inserts them on
the writer connection, inside the transaction that will also mark the request
completed, so a worker that dies leaves no chunk behind. Inserts run in a task
behind a small queue: reading the next rows overlaps writing the last ones,
and memory stays at a few chunks whatever the export's size.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from kaireon_client.envelope import EnvelopeWriter, KeyRing
from kaireon_server.dsar import repository
from kaireon_server.dsar.exporter import ByteSink
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.platform.signing import (
    UNSIGNED,
    Signer,
    private_key_from_env,
)
from kaireon_server.platform.tasks import cancel_and_wait

_QUEUE_DEPTH = 3


@dataclass(frozen=True)
class StoredExport:
    chunks: int
    size: int
    digest: bytes

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()


class ChunkStore:
    def __init__(
        self,
        con: asyncpg.Connection,
        *,
        tenant_id: str,
        request_id: uuid.UUID,
        attempt: int,
        subject_id: str,
        chunk_bytes: int,
        throttle_seconds: float = 0.0,
    ) -> None:
        self._con = con
        self._key = (tenant_id, request_id, attempt, subject_id)
        self._chunk_bytes = chunk_bytes
        self._throttle = throttle_seconds
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._seq = 0
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(_QUEUE_DEPTH)
        self._task = asyncio.create_task(self._insert_loop(), name="dsar-chunk-writer")

    async def _insert_loop(self) -> None:
        tenant_id, request_id, attempt, subject_id = self._key
        while (item := await self._queue.get()) is not None:
            seq, data = item
            await repository.insert_chunk(
                self._con,
                tenant_id,
                request_id,
                attempt=attempt,
                seq=seq,
                subject_id=subject_id,
                data=data,
            )
            if self._throttle:
                await asyncio.sleep(self._throttle)

    async def _put(self, data: bytes) -> None:
        if self._task.done():
            self._task.result()  # re-raise the insert failure here, in the reading path
        put = asyncio.ensure_future(self._queue.put((self._seq, data)))
        try:
            # Waiting on a full queue must not hide an insert task that died meanwhile.
            await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            self._task.result()
        self._seq += 1

    async def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)
        self._buffer += data
        size = self._chunk_bytes
        if len(self._buffer) >= size:
            # Whole chunks out; the remainder waits for more bytes.
            whole = len(self._buffer) - len(self._buffer) % size
            view = bytes(self._buffer[:whole])
            del self._buffer[:whole]
            for start in range(0, whole, size):
                await self._put(view[start : start + size])

    async def close(self) -> StoredExport:
        if self._buffer or self._seq == 0:
            await self._put(bytes(self._buffer))
            self._buffer.clear()
        await self._queue.put(None)
        await self._task
        return StoredExport(self._seq, self._size, self._hash.digest())

    async def abort(self) -> None:
        with contextlib.suppress(Exception):  # the export failed already; this is clean-up
            await cancel_and_wait(self._task)


class EncryptingSink:
    """Plain document bytes in, envelope bytes out to the inner sink."""

    def __init__(self, inner: ByteSink, writer: EnvelopeWriter) -> None:
        self._inner = inner
        self._writer = writer
        self._started = False

    async def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            await self._inner.write(self._writer.start())
        out = self._writer.update(data)
        if out:
            await self._inner.write(out)

    async def finish(self) -> None:
        if not self._started:
            self._started = True
            await self._inner.write(self._writer.start())
        await self._inner.write(self._writer.finish())


def envelope_writer(
    keyring: KeyRing, *, tenant_id: str, request_id: str, exported_at: str
) -> EnvelopeWriter:
    return EnvelopeWriter(
        keyring, tenant_id=tenant_id, request_id=request_id, exported_at=exported_at
    )


class DigestSigner:
    """Signs a sha256 digest: the same ECDSA P-256 signature `Signer.sign` makes over
    the bytes, without holding an export of any size in memory.

    The key is the service's COSIGN_KEY (as platform/signing.py loads it); the
    platform Signer only signs whole byte strings.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey | None, key_id: str) -> None:
        self._key = key
        self.key_id = key_id if key is not None else ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], signer: Signer) -> DigestSigner:
        key = private_key_from_env(env)
        if key is None:
            return cls(None, "")
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if signer.public_key_pem and public.decode() != signer.public_key_pem:
            raise ConfigurationError("COSIGN_KEY changed while the server was starting")
        return cls(key, signer.key_id)

    def sign_digest(self, digest: bytes) -> str:
        if self._key is None:
            return UNSIGNED
        signature = self._key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return base64.b64encode(signature).decode()

    def __repr__(self) -> str:  # never print key material
        return f"DigestSigner(key_id={self.key_id[:16]}…)"
