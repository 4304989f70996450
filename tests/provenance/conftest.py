"""Fixtures of the provenance tests: a seeded tenant and a helper that fetches a bundle."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from nacl.secret import SecretBox

from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.app import App
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.audit_chain import AuditBatcher
from kaireon_server.platform.auth import Identity
from kaireon_server.platform.auth.identity import Role
from kaireon_server.platform.build_identity import BuildEnv
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from kaireon_server.platform.signing import signer_from_env
from kaireon_server.provenance.emit import ProvenanceEmitter, system_clock
from tests.support.server import metadata

# Seed decisions: k=1 and k=2 fall before RULES_CHANGED_AT, k=3 after it.
BEFORE_CHANGE = "dec_00001_1"
AFTER_CHANGE = "dec_00001_3"
SMALL_SEED = SeedSize(customers=2, interactions_per_customer=2, decisions_per_customer=3)


@dataclass(frozen=True)
class Fetched:
    body: bytes
    digest: str
    signature: str
    schema: str
    content_type: str
    initial_metadata: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(
    channel: grpc.aio.Channel, tenant: str, decision_id: str, *, role: str = "admin"
) -> Fetched:
    stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    call = stub.GetDecisionProvenance(
        provenance_pb2.GetDecisionProvenanceRequest(decision_id=decision_id),
        metadata=metadata(tenant, role),
    )
    reply = await call
    initial = {k: v for k, v in (await call.initial_metadata()) or () if isinstance(v, str)}
    return Fetched(
        body=reply.bundle.data,
        digest=reply.digest_sha256,
        signature=reply.signature,
        schema=reply.schema,
        content_type=reply.bundle.content_type,
        initial_metadata=initial,
    )


@pytest.fixture
async def seeded(db: Database, tenant: str) -> str:
    """A fresh tenant holding the demo data set (small)."""
    await seed_tenant(db, tenant, SMALL_SEED)
    return tenant


def admin(tenant: str) -> Identity:
    return Identity(tenant_id=tenant, role=Role.ADMIN, subject="admin@test")


@asynccontextmanager
async def emitter_on(db: Database, env: Mapping[str, str]) -> AsyncIterator[ProvenanceEmitter]:
    """An emitter outside any server (signing key from `env`, this build), with
    its own audit writer; both stopped afterwards."""
    emitter = ProvenanceEmitter(
        db=db,
        signer=signer_from_env(env),
        build=BuildEnv.from_env({}),
        clock=system_clock(),
        audit=AuditBatcher(db),
    )
    try:
        yield emitter
    finally:
        await emitter.close()
        await emitter.audit.close()


@asynccontextmanager
async def running_server(env: Mapping[str, str]) -> AsyncIterator[App]:
    """Another in-process server (its own environment) on the session database."""
    application = App(Settings.from_env(dict(env)))
    await application.start()
    try:
        yield application
    finally:
        await application.stop(grace=1)


@asynccontextmanager
async def running_app(env: Mapping[str, str]) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to `running_server(env)`."""
    async with running_server(env) as application:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{application.grpc_port}") as ch:
            yield ch


def cosign_encrypted_pem(
    key: ec.EllipticCurvePrivateKey, password: bytes, *, n: int = 65536
) -> bytes:
    """The file `cosign generate-key-pair` writes, built here with the same primitives
    (go-securesystemslib `encrypted`: scrypt N/r=8/p=1, 32-byte salt, NaCl secretbox
    over the PKCS#8 DER key, JSON with base64 byte fields, PEM-wrapped)."""
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt, nonce = os.urandom(32), os.urandom(SecretBox.NONCE_SIZE)
    secret = Scrypt(salt=salt, length=SecretBox.KEY_SIZE, n=n, r=8, p=1).derive(password)
    ciphertext = SecretBox(secret).encrypt(der, nonce).ciphertext

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    envelope = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
        "ciphertext": b64(ciphertext),
    }
    body = base64.b64encode(json.dumps(envelope, separators=(",", ":")).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
        + "\n".join(lines)
        + "\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    ).encode()


# Not skipped when missing: verifying with real openssl is the point of these tests.
OPENSSL = shutil.which("openssl") or "openssl"


def openssl_verify(
    tmp_path, public_pem: str, body: bytes, signature_b64: str
) -> subprocess.CompletedProcess[str]:
    """What an auditor runs: `openssl dgst -sha256 -verify pub.pem -signature sig.bin body.json`."""
    (tmp_path / "pub.pem").write_text(public_pem)
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(signature_b64))
    (tmp_path / "body.json").write_bytes(body)
    return subprocess.run(
        [OPENSSL, "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.bin", "body.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
