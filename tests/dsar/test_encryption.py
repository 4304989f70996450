"""The opt-in AES-256-GCM envelope: round trip, key rotation, tamper and move detection."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon_client.envelope import (
    FORMAT,
    AuthenticationFailed,
    EnvelopeError,
    KeyRing,
    decrypt_envelope,
    decrypt_file,
    encrypt_document,
)
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError
from tests.dsar.conftest import assert_canonical, create, export_of, new_key_spec, wait_done
from tests.support.server import metadata, wait_for_channel


async def _encrypted_export(app, tenant: str, subject: str) -> tuple[dsar_pb2.DsarRequest, bytes]:
    channel = await wait_for_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        return await export_of(
            dsar_pb2_grpc.DsarServiceStub(channel), tenant, subject, encrypt=True
        )
    finally:
        await channel.close()


async def test_encrypt_opt_in_round_trips(seeded, server_with_env, stub):
    spec = new_key_spec("v1")
    app = await server_with_env(KAIREON_ENCRYPTION_KEYS=spec)
    done, envelope = await _encrypted_export(app, seeded, "cust_00001")
    value = assert_canonical(envelope)
    assert value["encrypted"] is True
    assert set(value["data"]) == {"ciphertext", "format", "keyVersion", "tenantId"}
    assert value["data"]["format"] == FORMAT == "encrypted-aes-256-gcm"
    assert value["data"]["keyVersion"] == done.export_key_version == "v1"
    assert value["requestId"] == done.id
    # Nothing personal in clear.
    assert b"cust_00001" not in envelope and b"example.com" not in envelope
    plain = decrypt_envelope(envelope, KeyRing.parse(spec), tenant_id=seeded, request_id=done.id)
    document = assert_canonical(plain)
    assert document["encrypted"] is False and document["customerId"] == "cust_00001"
    assert document["counts"]["interactions"] == 5
    assert len(document["data"]["consentRecords"]) == 2
    # The plain export of the same subject holds the same rows.
    _, plain_export = await export_of(stub, seeded, "cust_00001")
    assert json.loads(plain_export)["data"]["interactions"] == document["data"]["interactions"]


async def test_rotation_new_exports_use_the_new_key_old_ones_still_decrypt(
    seeded, server_with_env, no_session_workers
):
    spec_v1 = new_key_spec("v1")
    old_app = await server_with_env(KAIREON_ENCRYPTION_KEYS=spec_v1)
    old, old_envelope = await _encrypted_export(old_app, seeded, "cust_00001")
    await old_app.stop(grace=1)
    rotated = spec_v1 + "," + new_key_spec("v2")  # v2 last: the active one
    new_app = await server_with_env(KAIREON_ENCRYPTION_KEYS=rotated)
    new, new_envelope = await _encrypted_export(new_app, seeded, "cust_00001")
    assert (old.export_key_version, new.export_key_version) == ("v1", "v2")
    assert json.loads(new_envelope)["data"]["keyVersion"] == "v2"
    ring = KeyRing.parse(rotated)
    for envelope in (old_envelope, new_envelope):
        assert json.loads(decrypt_envelope(envelope, ring))["customerId"] == "cust_00001"
    # A ring that dropped v1 says which version it lacks.
    with pytest.raises(EnvelopeError, match="'v1' is not in the key ring"):
        decrypt_envelope(old_envelope, KeyRing.parse(rotated.split(",")[1]))
    # The active version can also be named explicitly.
    assert KeyRing.parse(rotated, "v1").active == "v1"


def _flip(envelope: bytes, at: int) -> bytes:
    value = json.loads(envelope)
    blob = bytearray(base64.b64decode(value["data"]["ciphertext"]))
    blob[at] ^= 0x01
    value["data"]["ciphertext"] = base64.b64encode(bytes(blob)).decode()
    return json.dumps(value).encode()


def _small_envelope(ring: KeyRing) -> bytes:
    return encrypt_document(
        b'{"customerId":"c","data":{}}',
        ring,
        tenant_id="acme",
        request_id="req-1",
        exported_at="2026-01-01T00:00:00.000000Z",
    )


@pytest.mark.parametrize("at", [0, 5, 12, 20, -1])  # nonce, ciphertext, tag
def test_a_changed_byte_fails_authentication(at: int):
    ring = KeyRing.parse(new_key_spec("v1"))
    envelope = _small_envelope(ring)
    assert decrypt_envelope(envelope, ring) == b'{"customerId":"c","data":{}}'
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        decrypt_envelope(_flip(envelope, at), ring)


def test_an_envelope_moved_to_another_request_or_tenant_fails():
    ring = KeyRing.parse(new_key_spec("v1", "v2"))
    envelope = _small_envelope(ring)
    with pytest.raises(AuthenticationFailed):
        decrypt_envelope(envelope, ring, request_id="req-2")
    with pytest.raises(AuthenticationFailed):
        decrypt_envelope(envelope, ring, tenant_id="other")
    # Editing the clear bindings in the envelope fails as well.
    for path, value in ((("requestId",), "req-2"), (("data", "tenantId"), "other")):
        doc = json.loads(envelope)
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        with pytest.raises(AuthenticationFailed):
            decrypt_envelope(doc, ring)
    # The key version is bound too: claiming v1 for a v2 envelope fails.
    doc = json.loads(envelope)
    doc["data"]["keyVersion"] = "v1"
    with pytest.raises(AuthenticationFailed):
        decrypt_envelope(doc, ring)


def test_decrypt_file_streams_and_leaves_nothing_when_tampered(tmp_path: Path):
    ring = KeyRing.parse(new_key_spec("v1"))
    plaintext = json.dumps({"data": {"rows": ["x" * 100] * 20000}}).encode()  # ~2 MB
    envelope = encrypt_document(
        plaintext, ring, tenant_id="acme", request_id="r", exported_at="2026-01-01T00:00:00Z"
    )
    source, out = tmp_path / "export.enc.json", tmp_path / "out" / "export.json"
    source.write_bytes(envelope)
    info = decrypt_file(source, out, ring)
    assert out.read_bytes() == plaintext
    assert (info.key_version, info.tenant_id, info.request_id) == ("v1", "acme", "r")
    out.unlink()
    source.write_bytes(_flip(envelope, len(plaintext) // 2))
    with pytest.raises(AuthenticationFailed):
        decrypt_file(source, out, ring)
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no encryption keys"),
        ("v1", "expected '<version>:<base64 key>'"),
        ("v1:not*base64", "not valid base64"),
        ("v1:" + base64.b64encode(b"short").decode(), "must be 32 bytes, not 5"),
        ("v1:{k},v1:{k}", "listed twice"),
        ("bad version:{k}", "expected"),
    ],
)
def test_bad_key_configuration_is_reported_without_key_material(spec: str, message: str):
    key = base64.b64encode(b"K" * 32).decode()
    with pytest.raises(EnvelopeError, match=message) as err:
        KeyRing.parse(spec.replace("{k}", key))
    assert key not in str(err.value)


def test_key_ring_repr_and_server_configuration_hide_keys(server_env):
    spec = new_key_spec("v1")
    ring = KeyRing.parse(spec)
    assert spec.split(":")[1] not in repr(ring)
    with pytest.raises(EnvelopeError, match="'v9' is not configured"):
        KeyRing.parse(spec, "v9")
    from kaireon_server.dsar.settings import DsarSettings

    with pytest.raises(ConfigurationError, match="KAIREON_ENCRYPTION_KEYS") as err:
        DsarSettings.from_env({"KAIREON_ENCRYPTION_KEYS": spec + ",v2:AAAA"})
    assert spec.split(":")[1] not in str(err.value)
    settings = Settings.from_env({**server_env, "KAIREON_ENCRYPTION_KEYS": spec})
    assert spec.split(":")[1] not in repr(DsarSettings.from_env(settings.env))


async def test_a_worker_without_keys_leaves_encrypted_jobs_to_one_with_keys(
    seeded, server_with_env, stub
):
    # The session server has no keys: its worker must not claim (and fail) the job.
    spec = new_key_spec("v1")
    app = await server_with_env(KAIREON_ENCRYPTION_KEYS=spec, KAIREON_DSAR_WORKERS="0")
    channel = await wait_for_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        keyed = dsar_pb2_grpc.DsarServiceStub(channel)
        request = await create(keyed, seeded, "cust_00001", encrypt=True)
        import asyncio

        await asyncio.sleep(1.5)
        reply = await stub.GetDsarRequest(
            dsar_pb2.GetDsarRequestRequest(id=request.id), metadata=metadata(seeded, "operator")
        )
        assert (reply.request.status, reply.request.attempts) == ("pending", 0)
        await server_with_env(KAIREON_ENCRYPTION_KEYS=spec)  # a worker with the keys
        done = await wait_done(keyed, seeded, request.id)
        assert (done.status, done.attempts, done.export_key_version) == ("completed", 1, "v1")
    finally:
        await channel.close()


async def test_get_attaches_the_envelope_inline(seeded, server_with_env):
    app = await server_with_env(KAIREON_ENCRYPTION_KEYS=new_key_spec("k1"))
    done, envelope = await _encrypted_export(app, seeded, "cust_00003")
    channel = await wait_for_channel(f"127.0.0.1:{app.grpc_port}")
    try:
        reply = await dsar_pb2_grpc.DsarServiceStub(channel).GetDsarRequest(
            dsar_pb2.GetDsarRequestRequest(id=done.id), metadata=metadata(seeded, "operator")
        )
    finally:
        await channel.close()
    attached = reply.request.exported_data
    assert attached.encrypted is True and attached.customer_id == "" and not attached.counts
    assert attached.data["keyVersion"] == "k1"
    assert attached.data["ciphertext"] == json.loads(envelope)["data"]["ciphertext"]
