"""Evidence carries proofs (docs/AUDIT.md): an erasure receipt, a provenance bundle and
a DSAR export package, each obtained from a real server with the evidence proof of
its own audit row, and checked offline by `kaireon_client.tlog.evidence` against
the pinned log key (and two witnesses).

The server here runs no integrator of its own: the test integrates (the server's
`Integrator`, on the same database) when it wants a row checkpointed, so "pending"
and "attached" are both deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc
from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_client.tlog.checkpoint import tenant_log_signer, tenant_log_verifier
from kaireon_client.tlog.evidence import (
    attach_leaf,
    evidence_leaf,
    verify_artefact_proof,
    verify_bundle_proof,
    verify_export_proof,
    verify_receipt_proof,
)
from kaireon_client.tlog.note import Verifier, parse_note, sign_note
from kaireon_client.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof
from kaireon_server.app import App
from kaireon_server.audit import tlog
from kaireon_server.demo.seed import SeedSize, seed_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from tests.support.pg import create_database, drop_database
from tests.support.server import base_env, metadata
from tests.tlog.test_server_log import LOG_NAME, Keys, _cosign_all

T = TypeVar("T")
SEED = SeedSize(customers=2, interactions_per_customer=2, decisions_per_customer=3)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("evidence-keys"))


@pytest.fixture(scope="module")
def env_of(keys: Keys, signing_key_path: Path) -> Any:
    def env(dsn: str) -> dict[str, str]:
        return base_env(
            dsn,
            COSIGN_KEY=str(signing_key_path),
            KAIREON_LOG_KEY=keys.log_pem,
            KAIREON_LOG_NAME=LOG_NAME,
            KAIREON_WITNESS_KEYS=",".join(w.vkey() for w in keys.witnesses),
            KAIREON_WITNESS_QUORUM="2",
            # The test integrates; the erasure waits at most this long for it.
            KAIREON_TLOG_INTEGRATOR="false",
            KAIREON_EVIDENCE_PROOF_WAIT="3",
        )

    return env


@pytest.fixture(scope="module")
async def evidence_app(pg_admin_dsn: str, env_of: Any) -> AsyncIterator[tuple[App, Any]]:
    dsn = await create_database(pg_admin_dsn, prefix="kaireon_evidence")
    env = env_of(dsn)
    application = App(Settings.from_env(env))
    await application.start()
    yield application, env
    await application.stop(grace=1)
    await drop_database(pg_admin_dsn, dsn)


@pytest.fixture
async def app_db(evidence_app: tuple[App, Any]) -> Database:
    assert evidence_app[0].db is not None
    return evidence_app[0].db


@pytest.fixture
async def channel(evidence_app: tuple[App, Any]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{evidence_app[0].grpc_port}") as ch:
        yield ch


@pytest.fixture
def integrator(evidence_app: tuple[App, Any], app_db: Database) -> tlog.Integrator:
    return tlog.Integrator(app_db, tlog.TlogSettings.from_env(evidence_app[1]))


@pytest.fixture
async def seeded(app_db: Database, tenant: str) -> str:
    await seed_tenant(app_db, tenant, SEED)
    return tenant


def log_keys(keys: Keys, tenant: str) -> list[Verifier]:
    return [tenant_log_verifier(keys.log_key.public_key(), LOG_NAME, tenant)]


def witness_keys(keys: Keys) -> list[Verifier]:
    return [w.verifier() for w in keys.witnesses]


async def while_integrating(integrator: tlog.Integrator, tenant: str, call: Awaitable[T]) -> T:
    """Run `call` while integrating the tenant's log every 50 ms, as a server would."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(0.05)
            await integrator.integrate(tenant)

    task = asyncio.create_task(loop())
    try:
        return await call
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def inclusion(channel: grpc.aio.Channel, tenant: str, event_id: str) -> str:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    answer = await stub.GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(event_id=event_id), metadata=metadata(tenant)
    )
    return answer.tlog_proof


def resigned(proof: str, key: Ed25519PrivateKey, tenant: str) -> str:
    """The same proof against the same checkpoint body, signed by `key` instead."""
    parsed = parse_tlog_proof(proof)
    note = parse_note(parsed.checkpoint)
    forged = sign_note(note.text, [tenant_log_signer(key, LOG_NAME, tenant)])
    text = forged.to_bytes().decode()
    return format_tlog_proof(TlogProof(parsed.index, parsed.proof, text, parsed.extra))


def tampered_hash(proof: str) -> str:
    parsed = parse_tlog_proof(proof)
    assert parsed.proof, "a proof with no path cannot be tampered with here"
    first = bytes([parsed.proof[0][0] ^ 1]) + parsed.proof[0][1:]
    return format_tlog_proof(
        TlogProof(parsed.index, (first, *parsed.proof[1:]), parsed.checkpoint, parsed.extra)
    )


async def erase(
    channel: grpc.aio.Channel, tenant: str, customer: str
) -> erasure_pb2.ErasureReceipt:
    stub = erasure_pb2_grpc.ErasureServiceStub(channel)
    reply = await stub.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id=customer), metadata=metadata(tenant)
    )
    return reply.receipt


# --- erasure receipts ----------------------------------------------------------


async def test_erasure_receipt_carries_its_proof_and_verifies_offline(
    channel: grpc.aio.Channel, seeded: str, integrator: tlog.Integrator, keys: Keys
) -> None:
    receipt = await while_integrating(integrator, seeded, erase(channel, seeded, "cust_00001"))
    assert receipt.tlog_proof and not receipt.tlog_proof_pending
    payload = json.loads(receipt.canonical_payload)
    verdict = verify_receipt_proof(
        receipt.canonical_payload, receipt.tlog_proof, log_keys(keys, seeded)
    )
    assert verdict.ok, str(verdict)
    assert verdict.leaf is not None and verdict.leaf.id == payload["auditEventId"]
    # The signed bytes are untouched: the proof sits beside them.
    assert "tlog" not in receipt.canonical_payload

    # Refused: a flipped proof hash, a checkpoint signed by another key, a pinned
    # key of another tenant, and a receipt whose counts were changed.
    refusals = {
        "tampered": verify_receipt_proof(
            receipt.canonical_payload, tampered_hash(receipt.tlog_proof), log_keys(keys, seeded)
        ),
        "other key": verify_receipt_proof(
            receipt.canonical_payload,
            resigned(receipt.tlog_proof, Ed25519PrivateKey.generate(), seeded),
            log_keys(keys, seeded),
        ),
        "other tenant": verify_receipt_proof(
            receipt.canonical_payload, receipt.tlog_proof, log_keys(keys, "someone-else")
        ),
    }
    for name, refused in refusals.items():
        assert not refused.ok and refused.step == "proof", (name, str(refused))
    forged = dict(payload, deletedCounts={**payload["deletedCounts"], "interactions": 0})
    binding = verify_receipt_proof(json.dumps(forged), receipt.tlog_proof, log_keys(keys, seeded))
    assert not binding.ok and binding.step == "binding" and "changes" in binding.reason


async def test_a_pending_receipt_gets_its_proof_later_and_an_edited_row_is_refused(
    channel: grpc.aio.Channel,
    seeded: str,
    integrator: tlog.Integrator,
    app_db: Database,
    keys: Keys,
) -> None:
    # Nobody integrates: the bounded wait ends and the receipt says "pending".
    receipt = await erase(channel, seeded, "cust_00002")
    assert receipt.tlog_proof == "" and receipt.tlog_proof_pending
    event_id = json.loads(receipt.canonical_payload)["auditEventId"]

    await integrator.integrate(seeded)
    later = await inclusion(channel, seeded, event_id)
    verdict = verify_receipt_proof(receipt.canonical_payload, later, log_keys(keys, seeded))
    assert verdict.ok, str(verdict)
    # The leaf travels in the proof; attach_leaf rebuilds the same text from parts.
    leaf = evidence_leaf(later)
    assert attach_leaf(later, leaf.canonical()) == later

    # With the owner's access, the erasure row is edited after it was checkpointed
    # (its counts, as a forger of receipts would): the proof the server now serves
    # no longer leads to the signed root.
    async with app_db.owner_connection() as con:
        await con.execute(
            "UPDATE audit_log SET changes = changes || '{\"interactions\": 0}'::jsonb "
            "WHERE tenant_id = $1 AND id = $2::uuid",
            seeded,
            event_id,
        )
    payload = json.loads(receipt.canonical_payload)
    forged = dict(payload, deletedCounts={**payload["deletedCounts"], "interactions": 0})
    after_edit = await inclusion(channel, seeded, event_id)
    for artefact in (receipt.canonical_payload, json.dumps(forged)):
        refused = verify_receipt_proof(artefact, after_edit, log_keys(keys, seeded))
        assert not refused.ok and refused.step == "proof", str(refused)


# --- provenance bundles ----------------------------------------------------------


async def test_a_bundle_names_its_emission_row_whose_proof_verifies_it(
    channel: grpc.aio.Channel, seeded: str, integrator: tlog.Integrator, keys: Keys
) -> None:
    stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
    call = stub.GetDecisionProvenance(
        provenance_pb2.GetDecisionProvenanceRequest(decision_id="dec_00001_3"),
        metadata=metadata(seeded),
    )
    reply = await call
    headers = dict(await call.initial_metadata() or ())
    assert reply.audit_event_id and headers["x-provenance-audit-event-id"] == reply.audit_event_id
    body = reply.bundle.data

    await integrator.integrate(seeded)
    proof = await inclusion(channel, seeded, reply.audit_event_id)
    verdict = verify_bundle_proof(body, proof, log_keys(keys, seeded))
    assert verdict.ok, str(verdict)
    assert verify_artefact_proof("bundle", body, proof, log_keys(keys, seeded)).ok

    # Another decision's bundle, or a byte changed, is not this row's.
    changed = body.replace(b'"dec_00001_3"', b'"dec_00001_2"', 1)
    refused = verify_bundle_proof(changed, proof, log_keys(keys, seeded))
    assert not refused.ok and refused.step == "binding", str(refused)
    other_key = verify_bundle_proof(
        body, resigned(proof, Ed25519PrivateKey.generate(), seeded), log_keys(keys, seeded)
    )
    assert not other_key.ok and other_key.step == "proof"


# --- DSAR export packages --------------------------------------------------------


async def _export(
    channel: grpc.aio.Channel, tenant: str, subject: str
) -> tuple[str, dict[str, str], bytes]:
    stub = dsar_pb2_grpc.DsarServiceStub(channel)
    md = metadata(tenant, "operator")
    created = await stub.CreateDsarRequest(
        dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id=subject), metadata=md
    )
    request_id = created.request.id
    async for item in stub.WatchDsarRequest(
        dsar_pb2.WatchDsarRequestRequest(id=request_id), metadata=md, timeout=60
    ):
        if item.request.status in ("completed", "failed"):
            assert item.request.status == "completed", item.request.error
            break
    call = stub.StreamDsarExport(dsar_pb2.StreamDsarExportRequest(id=request_id), metadata=md)
    headers = dict(await call.initial_metadata() or ())
    data = b"".join([item.chunk.data async for item in call])
    return request_id, {k: v for k, v in headers.items() if isinstance(v, str)}, data


async def test_a_dsar_download_carries_the_proof_of_its_completion_row(
    channel: grpc.aio.Channel,
    seeded: str,
    integrator: tlog.Integrator,
    keys: Keys,
    tmp_path: Path,
) -> None:
    # Downloaded before the log caught up: no proof yet, the row's id to fetch it by.
    _, early, data = await _export(channel, seeded, "cust_00001")
    assert early["x-export-tlog-proof"] == "" and early["x-export-audit-event-id"]
    later = await while_integrating(
        integrator, seeded, inclusion_when_ready(channel, seeded, early["x-export-audit-event-id"])
    )
    assert verify_export_proof(data, later, log_keys(keys, seeded)).ok

    # Downloaded after: the download carries it. Cosigned by both witnesses by
    # then, it verifies with a quorum of two.
    request_id, _, _ = await _export(channel, seeded, "cust_00002")
    await integrator.integrate(seeded)
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    latest = (
        await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=metadata(seeded))
    ).checkpoint
    await _cosign_all(audit, keys, tmp_path, seeded, latest)
    _, headers, data = await _download_again(channel, seeded, request_id)
    proof = base64.b64decode(headers["x-export-tlog-proof"]).decode()
    verdict = verify_export_proof(data, proof, log_keys(keys, seeded), witness_keys(keys), quorum=2)
    assert verdict.ok, str(verdict)
    assert verdict.checkpoint is not None and len(verdict.checkpoint.witnesses) == 2
    assert verdict.leaf is not None and verdict.leaf.entity_id == request_id

    for name, bad in {
        "tampered": tampered_hash(proof),
        "other key": resigned(proof, Ed25519PrivateKey.generate(), seeded),
    }.items():
        refused = verify_export_proof(
            data, bad, log_keys(keys, seeded), witness_keys(keys), quorum=2
        )
        assert not refused.ok and refused.step == "proof", (name, str(refused))
    refused = verify_export_proof(data[:-1] + b" ", proof, log_keys(keys, seeded))
    assert not refused.ok and refused.step == "binding"


async def inclusion_when_ready(channel: grpc.aio.Channel, tenant: str, event_id: str) -> str:
    while True:
        try:
            return await inclusion(channel, tenant, event_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise
            await asyncio.sleep(0.05)


async def _download_again(
    channel: grpc.aio.Channel, tenant: str, request_id: str
) -> tuple[str, dict[str, str], bytes]:
    stub = dsar_pb2_grpc.DsarServiceStub(channel)
    call = stub.StreamDsarExport(
        dsar_pb2.StreamDsarExportRequest(id=request_id), metadata=metadata(tenant, "operator")
    )
    headers = dict(await call.initial_metadata() or ())
    data = b"".join([item.chunk.data async for item in call])
    return request_id, {k: v for k, v in headers.items() if isinstance(v, str)}, data
