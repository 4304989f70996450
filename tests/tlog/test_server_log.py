"""The server's transparency log end to end: real PostgreSQL, a real server with a
log key and two witnesses, real gRPC calls, the real `kaireon verify audit` and
`kaireon-witness` commands.

The tamper tests are the attacks of docs/AUDIT.md's threat model, done with the
database owner's access after a checkpoint was cosigned: a single-row edit, a
deleted row, a truncated tail and a full rehash of the chain (edit a row,
recompute every later chain hash, move the head). Each is caught three ways:
the server's verification names the first bad row; `kaireon verify audit`, run
on an export taken from the server after the attack against the checkpoint
obtained before it, names it too; and a witness that cosigned the real
checkpoint refuses the checkpoint a log rebuilt over the tampered rows signs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc
from kaireon_client.tlog.checkpoint import open_checkpoint, tenant_log_verifier
from kaireon_client.tlog.cosignature import CosignatureSigner
from kaireon_client.tlog.leaf import AuditLeaf, personal_digest
from kaireon_client.tlog.merkle import encode_hash, leaf_hash, verify_consistency, verify_inclusion
from kaireon_client.tlog.note import SIG_ED25519_COSIGNATURE, format_private_key
from kaireon_client.tlog.proof import verify_tlog_proof
from kaireon_server.app import App
from kaireon_server.audit.tlog import Integrator, TlogSettings
from kaireon_server.platform.audit_chain import (
    append_audit,
    redact_subject,
)
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import Database
from tests.support.pg import create_database, drop_database
from tests.support.server import base_env, metadata
from tests.tlog.forge import drop_leaf_hashes, rehash_chain

LOG_NAME = "kaireon.test"
VENV_BIN = Path(sys.executable).parent


class Keys:
    def __init__(self, directory: Path) -> None:
        self.log_key = Ed25519PrivateKey.generate()
        self.log_pem = self.log_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.witnesses: list[CosignatureSigner] = []
        self.witness_files: list[Path] = []
        for i in range(2):
            key = Ed25519PrivateKey.generate()
            name = f"witness{i}.test/w"
            path = directory / f"witness{i}.key"
            path.write_text(format_private_key(name, SIG_ED25519_COSIGNATURE, key) + "\n")
            path.chmod(0o600)
            self.witnesses.append(CosignatureSigner(name, key))
            self.witness_files.append(path)

    def log_vkey(self, tenant: str) -> str:
        return tenant_log_verifier(self.log_key.public_key(), LOG_NAME, tenant).vkey()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("tlog-keys"))


@pytest.fixture(scope="module")
async def signed_app(pg_admin_dsn: str, keys: Keys) -> AsyncIterator[App]:
    dsn = await create_database(pg_admin_dsn, prefix="kaireon_tlog")
    env = base_env(
        dsn,
        KAIREON_LOG_KEY=keys.log_pem,
        KAIREON_LOG_NAME=LOG_NAME,
        KAIREON_WITNESS_KEYS=",".join(w.vkey() for w in keys.witnesses),
        KAIREON_WITNESS_QUORUM="2",
        KAIREON_TLOG_INTERVAL="0.05",
    )
    application = App(Settings.from_env(env))
    await application.start()
    yield application
    await application.stop(grace=1)
    await drop_database(pg_admin_dsn, dsn)


@pytest.fixture(scope="module")
async def stub(signed_app: App) -> AsyncIterator[audit_pb2_grpc.AuditServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{signed_app.grpc_port}") as channel:
        yield audit_pb2_grpc.AuditServiceStub(channel)


def _db(app: App) -> Database:
    assert app.db is not None
    return app.db


async def _append(db: Database, tenant: str, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        async with db.transaction(tenant) as con:
            record = await append_audit(
                con,
                tenant,
                action="consent_changed",
                entity_type="customer",
                entity_id=f"cust_{i:03d}",
                actor="operator",
                changes={"i": i},
                personal={"email": f"p{i}@example.com"},
                entity_id_is_personal=True,
                subject_id=f"cust_{i:03d}",
            )
            ids.append(record.id)
    return ids


async def _checkpoint(
    stub: audit_pb2_grpc.AuditServiceStub, tenant: str, size: int, timeout: float = 20.0
) -> audit_pb2.Checkpoint:
    """Wait until the integrator has checkpointed `size` entries (generous: a noisy machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            answer = await stub.GetCheckpoint(
                audit_pb2.GetCheckpointRequest(), metadata=metadata(tenant)
            )
            cp = answer.checkpoint
            if cp.tree_size >= size:
                return cp
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        assert loop.time() < deadline, f"no checkpoint of size {size} within {timeout} s"
        await asyncio.sleep(0.05)


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def _verify_audit(
    export: str, tmp: Path, keys: Keys, tenant: str
) -> subprocess.CompletedProcess[str]:
    path = tmp / "export.json"
    path.write_text(export)
    return _run(
        VENV_BIN / "kaireon",
        "verify",
        "audit",
        path,
        "--log-vkey",
        keys.log_vkey(tenant),
        *[a for w in keys.witnesses for a in ("--witness-vkey", w.vkey())],
        "--quorum",
        "2",
    )


def _cosign_cli(
    keys: Keys, i: int, state: Path, tenant: str, request: str
) -> subprocess.CompletedProcess[str]:
    return _run(
        VENV_BIN / "kaireon-witness",
        "cosign",
        "--key",
        keys.witness_files[i],
        "--state",
        state,
        "--log-vkey",
        keys.log_vkey(tenant),
        "-",
        stdin=request,
    )


async def _cosign_all(
    stub: audit_pb2_grpc.AuditServiceStub,
    keys: Keys,
    tmp: Path,
    tenant: str,
    cp: audit_pb2.Checkpoint,
) -> audit_pb2.Checkpoint:
    """Both witnesses cosign `cp` (fresh witnesses: old 0) and the lines go to the server."""
    response = cp
    for i in range(2):
        result = _cosign_cli(keys, i, tmp / f"w{i}.json", tenant, f"old 0\n\n{cp.note}")
        assert result.returncode == 0, result.stderr
        response = (
            await stub.AddCosignature(
                audit_pb2.AddCosignatureRequest(tree_size=cp.tree_size, cosignature=result.stdout),
                metadata=metadata(tenant),
            )
        ).checkpoint
    return response


async def test_checkpoints_proofs_and_exports_verify(
    signed_app: App, stub: Any, keys: Keys, tenant: str, tmp_path: Path
) -> None:
    db = _db(signed_app)
    ids = await _append(db, tenant, 5)
    first = await _checkpoint(stub, tenant, 5)
    assert first.signed and first.log_vkey == keys.log_vkey(tenant)
    assert first.origin == f"{LOG_NAME}/audit/{tenant}"
    signed = open_checkpoint(
        first.note, [tenant_log_verifier(keys.log_key.public_key(), LOG_NAME, tenant)]
    )
    assert signed.checkpoint.size == 5 and signed.checkpoint.root_hash == first.root_hash
    assert not first.witness_quorum_met

    ids += await _append(db, tenant, 4, start=5)
    second = await _checkpoint(stub, tenant, 9)
    cosigned = await _cosign_all(stub, keys, tmp_path, tenant, second)
    assert cosigned.witness_quorum_met and len(cosigned.cosignatures) == 2
    again = (
        await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=metadata(tenant))
    ).checkpoint
    assert again.note == cosigned.note and again.note.count("\n\u2014 ") == 3

    # Inclusion of the 7th row, by id and by index, and its C2SP tlog-proof.
    proof = await stub.GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(event_id=ids[6]), metadata=metadata(tenant)
    )
    assert proof.index == 6 and proof.tree_size == 9
    leaf = AuditLeaf.from_json(json.loads(proof.leaf))
    assert leaf.seq == 7 and leaf.entity_id is None and leaf.subject_id_digest
    verify_inclusion(leaf_hash(proof.leaf.encode()), 6, 9, list(proof.hashes), second.root_hash)
    verify_tlog_proof(
        proof.tlog_proof,
        leaf.canonical(),
        [tenant_log_verifier(keys.log_key.public_key(), LOG_NAME, tenant)],
        [w.verifier() for w in keys.witnesses],
        quorum=2,
    )
    by_index = await stub.GetInclusionProof(
        audit_pb2.GetInclusionProofRequest(index=6, tree_size=5 if False else 9),
        metadata=metadata(tenant),
    )
    assert by_index.hashes == proof.hashes

    # Consistency 5 -> 9.
    consistency = await stub.GetConsistencyProof(
        audit_pb2.GetConsistencyProofRequest(first_size=5, second_size=9), metadata=metadata(tenant)
    )
    verify_consistency(5, 9, list(consistency.hashes), first.root_hash, second.root_hash)

    # The export of everything, and of a middle range, verify with the real command.
    export = await stub.ListEntries(audit_pb2.ListEntriesRequest(), metadata=metadata(tenant))
    assert (export.start, export.end, export.tree_size) == (0, 9, 9)
    result = _verify_audit(export.export, tmp_path, keys, tenant)
    assert result.returncode == 0, result.stderr
    assert "root recomputed" in result.stdout
    middle = await stub.ListEntries(
        audit_pb2.ListEntriesRequest(start=3, end=9), metadata=metadata(tenant)
    )
    assert json.loads(middle.export)["prefix"]["size"] == 3
    assert _verify_audit(middle.export, tmp_path, keys, tenant).returncode == 0

    # Redaction changes no leaf: the export after it still verifies.
    async with db.transaction(tenant) as con:
        assert await redact_subject(con, tenant, "cust_002") == 1
    after = await stub.ListEntries(audit_pb2.ListEntriesRequest(), metadata=metadata(tenant))
    assert "cust_002" not in after.export
    assert _verify_audit(after.export, tmp_path, keys, tenant).returncode == 0

    # Verification: incremental (then nothing new), a range, and the full stream.
    verdict = await stub.VerifyLog(audit_pb2.VerifyLogRequest(), metadata=metadata(tenant))
    assert verdict.valid and (verdict.start, verdict.end, verdict.rows_checked) == (0, 9, 9)
    verdict = await stub.VerifyLog(audit_pb2.VerifyLogRequest(), metadata=metadata(tenant))
    assert verdict.valid and (verdict.start, verdict.end, verdict.rows_checked) == (9, 9, 0)
    await _append(db, tenant, 2, start=9)
    await _checkpoint(stub, tenant, 11)
    verdict = await stub.VerifyLog(audit_pb2.VerifyLogRequest(), metadata=metadata(tenant))
    assert verdict.valid and (verdict.start, verdict.end, verdict.rows_checked) == (9, 11, 2)
    ranged = await stub.VerifyLog(
        audit_pb2.VerifyLogRequest(range=True, start=2, end=6), metadata=metadata(tenant)
    )
    assert ranged.valid and ranged.rows_checked == 4 and ranged.more
    messages = [
        m
        async for m in stub.StreamVerifyLog(
            audit_pb2.StreamVerifyLogRequest(), metadata=metadata(tenant)
        )
    ]
    assert messages[-1].HasField("result") and messages[-1].result.valid
    assert messages[-1].result.rows_checked == 11


@pytest.mark.parametrize(
    "bad_request",
    [
        audit_pb2.GetInclusionProofRequest(event_id="not-a-uuid"),
        audit_pb2.GetInclusionProofRequest(index=-1),
        audit_pb2.GetInclusionProofRequest(index=99),
    ],
)
async def test_bad_proof_requests_are_refused(
    signed_app: App, stub: Any, tenant: str, bad_request: Any
) -> None:
    await _append(_db(signed_app), tenant, 2)
    await _checkpoint(stub, tenant, 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetInclusionProof(bad_request, metadata=metadata(tenant))
    assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


async def test_a_cosignature_of_an_unknown_witness_is_refused(
    signed_app: App, stub: Any, tenant: str
) -> None:
    await _append(_db(signed_app), tenant, 1)
    cp = await _checkpoint(stub, tenant, 1)
    stranger = CosignatureSigner("witness0.test/w", Ed25519PrivateKey.generate())
    body = cp.note.split("\n\n")[0] + "\n"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddCosignature(
            audit_pb2.AddCosignatureRequest(cosignature=stranger.cosign(body).line()),
            metadata=metadata(tenant),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    again = (
        await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=metadata(tenant))
    ).checkpoint
    assert not again.cosignatures


# attack -> (first bad seq the server names, its reason, leaf index the verifier names, witness exit)
ATTACKS = {
    "edit": (5, "integrity_hash_mismatch", 4, 6),
    "delete": (5, "sequence_gap", 4, 2),
    "truncate": (11, "sequence_gap", 10, 2),
    "rehash": (5, "leaf_mismatch", 4, 6),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_tampering_after_a_cosigned_checkpoint_is_detected(
    signed_app: App, stub: Any, keys: Keys, tenant: str, tmp_path: Path, attack: str
) -> None:
    db = _db(signed_app)
    await _append(db, tenant, 12)
    before = await _cosign_all(stub, keys, tmp_path, tenant, await _checkpoint(stub, tenant, 12))
    assert before.tree_size == 12 and before.witness_quorum_met

    async with db.owner_connection() as con, con.transaction():
        if attack in ("edit", "rehash"):
            await con.execute(
                "UPDATE audit_log SET changes = '{\"i\": 999}'::jsonb "
                "WHERE tenant_id = $1 AND seq = 5",
                tenant,
            )
        elif attack == "delete":
            await con.execute("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 5", tenant)
        else:
            await con.execute("DELETE FROM audit_log WHERE tenant_id = $1 AND seq > 10", tenant)
        if attack in ("rehash", "truncate"):
            await rehash_chain(con, tenant)

    seq, reason, index, witness_exit = ATTACKS[attack]
    # 1. The server's full verification names the first bad row.
    messages = [
        m
        async for m in stub.StreamVerifyLog(
            audit_pb2.StreamVerifyLogRequest(), metadata=metadata(tenant)
        )
    ]
    result = messages[-1].result
    assert not result.valid
    assert (result.first_invalid_seq, result.reason) == (seq, reason)

    # 2. The auditor: an export taken now, against the checkpoint obtained before.
    export = await stub.ListEntries(audit_pb2.ListEntriesRequest(), metadata=metadata(tenant))
    document = json.loads(export.export)
    document["checkpoint"] = before.note
    checked = _verify_audit(json.dumps(document), tmp_path, keys, tenant)
    assert checked.returncode == 1, checked.stdout
    assert f"leaf index {index}:" in checked.stderr

    # 3. A log rebuilt over the tampered rows (tree tables wiped, the leaf
    # hashes their appends stored dropped so they are made from the rows again,
    # a fresh integrator with the log key) signs a checkpoint the witness
    # refuses. The running server, which remembers what it signed, refuses to sign it.
    async with db.owner_connection() as con, con.transaction():
        for table in ("audit_tlog_cosignature", "audit_tlog_checkpoint", "audit_tlog_node"):
            await con.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant)
        await con.execute("DELETE FROM audit_tlog_state WHERE tenant_id = $1", tenant)
        await drop_leaf_hashes(con, tenant)
        if attack == "delete":
            # Close the gap so the rows are contiguous again (renumber 6.. down by one).
            await con.execute(
                "UPDATE audit_log SET seq = seq - 1 WHERE tenant_id = $1 AND seq > 5", tenant
            )
            await rehash_chain(con, tenant)
    settings = TlogSettings.from_env(
        {"KAIREON_LOG_KEY": keys.log_pem, "KAIREON_LOG_NAME": LOG_NAME}
    )
    rebuilt = Integrator(db, settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await rebuilt.integrate(tenant):
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    forged = (
        await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=metadata(tenant))
    ).checkpoint
    assert forged.root_hash != before.root_hash
    refused = _cosign_cli(keys, 0, tmp_path / "w0.json", tenant, f"old 12\n\n{forged.note}")
    assert refused.returncode == witness_exit, refused.stderr


async def test_the_running_server_refuses_to_sign_a_rewritten_tree(
    signed_app: App, stub: Any, tenant: str
) -> None:
    db = _db(signed_app)
    await _append(db, tenant, 3)
    await _checkpoint(stub, tenant, 3)
    async with db.owner_connection() as con, con.transaction():
        await con.execute(
            "UPDATE audit_tlog_state SET compact = $2 WHERE tenant_id = $1",
            tenant,
            {"size": 3, "hashes": [encode_hash(bytes(32)), encode_hash(bytes(32))]},
        )
    await _append(db, tenant, 1, start=3)
    await asyncio.sleep(1.0)
    cp = (
        await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=metadata(tenant))
    ).checkpoint
    assert cp.tree_size == 3  # nothing signed over the rewritten tree


@pytest.mark.parametrize(
    "subject", ["cust_001", 'q"uote\\back', "tab\tnl\ncr\r\x01\x1f\x7f", "é ü 中文 😀 \u2028"]
)
async def test_the_subject_digest_is_the_leaf_construction(
    signed_app: App, tenant: str, subject: str
) -> None:
    """The database's digest (migration 0113) is sha256(salt || RFC 8785 JSON of the id)."""
    db = _db(signed_app)
    async with db.transaction(tenant) as con:
        await append_audit(
            con,
            tenant,
            action="dsar_export",
            entity_type="customer",
            entity_id="x",
            actor="operator",
            subject_id=subject,
        )
    async with db.owner_connection() as con:
        row = await con.fetchrow(
            "SELECT subject_id_salt, subject_id_digest FROM audit_log WHERE tenant_id = $1", tenant
        )
        assert row is not None and len(row["subject_id_salt"]) == 32
        assert row["subject_id_digest"] == personal_digest(row["subject_id_salt"], subject)
        async with db.transaction(tenant) as app_con:
            assert await redact_subject(app_con, tenant, subject) == 1
        after = await con.fetchrow(
            "SELECT subject_id_salt, subject_id_digest FROM audit_log WHERE tenant_id = $1", tenant
        )
        assert after is not None and after["subject_id_salt"] is None
        assert after["subject_id_digest"] == row["subject_id_digest"]


async def test_verifychain_resumes_where_its_last_valid_call_ended(
    signed_app: App, stub: Any, tenant: str
) -> None:
    db = _db(signed_app)
    await _append(db, tenant, 3)
    first = await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))
    assert first.valid and (first.rows_checked, first.resumed_from_seq) == (3, 0)
    await _append(db, tenant, 2, start=3)
    second = await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))
    assert second.valid and (second.rows_checked, second.resumed_from_seq) == (5, 3)
    assert not second.more
    # The row it resumes after is re-checked; a new row's edit is found at that row.
    async with db.owner_connection() as con:
        await con.execute(
            "UPDATE audit_log SET changes = '{\"i\": 9}'::jsonb WHERE tenant_id = $1 AND seq = 5",
            tenant,
        )
        await con.execute(
            "UPDATE audit_log SET integrity_hash = repeat('0', 64) "
            "WHERE tenant_id = $1 AND seq = 5",
            tenant,
        )
    third = await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))
    assert not third.valid and third.first_invalid_seq == 5
    assert third.reason == "integrity_hash_mismatch"
