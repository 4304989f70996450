"""Real signatures: openssl verifies them, a flipped byte fails, no key says "unsigned";
cosign's own encrypted key format is accepted."""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_client.signing import verify_signature
from kaireon_server.platform.errors import ConfigurationError
from kaireon_server.platform.signing import load_cosign_private_key, signer_from_env
from tests.provenance.conftest import (
    AFTER_CHANGE,
    cosign_encrypted_pem,
    fetch,
    openssl_verify,
    running_app,
)
from tests.support.server import base_env, metadata

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    OPENSSL is None, reason="openssl is required (apt-get install openssl)"
)


async def _signing_key(channel, tenant, role="viewer"):
    stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    return await stub.GetSigningKey(
        provenance_pb2.GetSigningKeyRequest(), metadata=metadata(tenant, role)
    )


async def test_openssl_verifies_the_signature_and_rejects_a_flipped_byte(
    channel, seeded, signing_key_path, tmp_path
):
    got = await fetch(channel, seeded, AFTER_CHANGE)
    key = await _signing_key(channel, seeded)
    # GetSigningKey serves the public half of COSIGN_KEY (any role may fetch it).
    assert key.public_key_pem == (signing_key_path.parent / "cosign-test.pub").read_text()
    assert key.algorithm == "ecdsa-p256-sha256"
    assert len(key.key_id) == 64
    ok = openssl_verify(tmp_path, key.public_key_pem, got.body, got.signature)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "Verified OK"
    for position in (0, len(got.body) // 2, len(got.body) - 1):
        flipped = bytearray(got.body)
        flipped[position] ^= 0x01
        bad = openssl_verify(tmp_path, key.public_key_pem, bytes(flipped), got.signature)
        assert bad.returncode == 1
        assert "Verification failure" in bad.stdout + bad.stderr


async def test_without_a_key_the_bundle_says_unsigned(database_url, seeded, db):
    async with running_app(base_env(database_url)) as channel:
        got = await fetch(channel, seeded, AFTER_CHANGE)
        key = await _signing_key(channel, seeded)
    assert got.signature == "unsigned"
    assert got.initial_metadata["x-provenance-signature"] == "unsigned"
    assert (key.public_key_pem, key.key_id, key.algorithm) == ("", "", "")
    async with db.transaction(seeded) as con:
        changes = await con.fetchval(
            "SELECT changes FROM audit_log WHERE tenant_id = $1 "
            "AND action = 'decision_provenance_emit'",
            seeded,
        )
    assert changes["signed"] is False
    assert changes["digestSha256"] == got.digest


async def test_unsigned_and_signed_replicas_agree_on_the_body(channel, database_url, seeded):
    signed = await fetch(channel, seeded, AFTER_CHANGE)
    async with running_app(base_env(database_url)) as unsigned_channel:
        unsigned = await fetch(unsigned_channel, seeded, AFTER_CHANGE)
    # The signature travels beside the body, never inside it.
    assert unsigned.body == signed.body


# --- cosign's encrypted key format ----------------------------------------------


def _public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("n", [32768, 65536])
def test_cosign_encrypted_key_loads_and_signs(tmp_path, n):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "cosign.key"
    path.write_bytes(cosign_encrypted_pem(key, b"correct horse", n=n))
    signer = signer_from_env({"COSIGN_KEY": str(path), "COSIGN_PASSWORD": "correct horse"})
    assert signer.public_key_pem == _public_pem(key)
    body = b'{"a":1}'
    signature = signer.sign(body)
    assert verify_signature(body, signature, _public_pem(key))
    result = openssl_verify(tmp_path, _public_pem(key), body, signature)
    assert result.returncode == 0, result.stderr


def test_cosign_key_with_an_empty_password(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = cosign_encrypted_pem(key, b"")
    # PEM content directly in COSIGN_KEY, no COSIGN_PASSWORD: cosign allows that too.
    signer = signer_from_env({"COSIGN_KEY": pem.decode()})
    assert signer.public_key_pem == _public_pem(key)


def test_cosign_key_with_the_wrong_password_is_a_configuration_error():
    pem = cosign_encrypted_pem(ec.generate_private_key(ec.SECP256R1()), b"right")
    with pytest.raises(ConfigurationError, match="wrong COSIGN_PASSWORD or damaged key"):
        load_cosign_private_key(pem, b"wrong")


def _rewrap(pem: bytes, change) -> bytes:
    lines = pem.decode().strip().splitlines()
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    change(envelope)
    body = base64.b64encode(json.dumps(envelope).encode()).decode()
    return f"{lines[0]}\n{body}\n{lines[-1]}\n".encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["kdf"]["params"].update(N=1 << 24), "unsupported scrypt parameters"),
        (lambda e: e["kdf"].update(name="pbkdf2"), "unsupported kdf or cipher"),
        (lambda e: e.update(ciphertext="not base64!"), "malformed cosign key envelope"),
        (lambda e: e["cipher"].update(nonce=base64.b64encode(b"short").decode()), "malformed"),
        (
            lambda e: e.update(
                ciphertext=base64.b64encode(
                    bytes([base64.b64decode(e["ciphertext"])[0] ^ 1])
                    + base64.b64decode(e["ciphertext"])[1:]
                ).decode()
            ),
            "wrong COSIGN_PASSWORD or damaged key",
        ),
    ],
)
def test_tampered_cosign_key_is_refused(change, message):
    pem = _rewrap(cosign_encrypted_pem(ec.generate_private_key(ec.SECP256R1()), b"pw"), change)
    with pytest.raises(ConfigurationError, match=message):
        load_cosign_private_key(pem, b"pw")


async def test_server_signs_with_a_cosign_encrypted_key(database_url, seeded, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "cosign.key"
    path.write_bytes(cosign_encrypted_pem(key, b"s3cret"))
    env = base_env(database_url, COSIGN_KEY=str(path), COSIGN_PASSWORD="s3cret")
    async with running_app(env) as channel:
        got = await fetch(channel, seeded, AFTER_CHANGE)
        served = await _signing_key(channel, seeded)
    assert served.public_key_pem == _public_pem(key)
    result = openssl_verify(tmp_path, served.public_key_pem, got.body, got.signature)
    assert result.returncode == 0, result.stderr
