"""Offline verification of an export finds each tampering the adversarial review tried,
naming the first bad leaf index: modified row, deleted row, truncated tail, reordered
pair, a whole rewrite with recomputed hashes, and a checkpoint the witnesses never saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.leaf import AuditLeaf, LeafError
from kaireon_client.tlog.merkle import CompactRange, LeafHashes, encode_hash, inclusion_proof
from kaireon_client.tlog.note import Ed25519Signer, Verifier
from kaireon_client.tlog.verify import VerificationError, verify_export
from tests.tlog.support import Log, deep

N = 40


@pytest.fixture(scope="module")
def log() -> Log:
    log = Log()
    log.append(N)
    return log


def _keys(log: Log) -> tuple[list[Verifier], list[Verifier]]:
    return [log.signer.verifier()], [w.verifier() for w in log.witnesses]


def _verify(log: Log, document: dict[str, Any], quorum: int = 2, **kw: Any) -> Any:
    logs, witnesses = _keys(log)
    return verify_export(document, logs, witnesses, quorum=quorum, **kw)


def _fails_at(log: Log, document: dict[str, Any], index: int | None, match: str) -> None:
    with pytest.raises(VerificationError, match=match) as caught:
        _verify(log, document)
    assert caught.value.index == index


def test_an_untouched_export_verifies(log: Log) -> None:
    report = _verify(log, log.export())
    assert (report.start, report.end, report.tree_size) == (0, N, N)
    assert report.proofs_checked == N and report.root_recomputed
    assert report.witnesses == tuple(w.name for w in log.witnesses)


def test_a_modified_row_fails_at_its_index(log: Log) -> None:
    document = deep(log.export())
    document["entries"][9]["leaf"]["changes"]["granted"] = "yes"
    _fails_at(log, document, 9, "does not match the checkpoint")


def test_a_modified_subject_digest_fails_at_its_index(log: Log) -> None:
    # subject_id was outside the old chain's hash; it is inside the leaf.
    document = deep(log.export())
    document["entries"][4]["leaf"]["subjectIdDigest"] = "0" * 64
    _fails_at(log, document, 4, "does not match the checkpoint")


def test_a_deleted_row_fails_at_the_missing_index(log: Log) -> None:
    document = deep(log.export())
    del document["entries"][17]
    _fails_at(log, document, 17, "expected the row with seq 18, found seq 19")


def test_a_deleted_row_with_renumbered_successors_fails_at_the_gap(log: Log) -> None:
    # The attacker also renumbers the rows after the gap: their leaves change.
    document = deep(log.export())
    del document["entries"][17]
    for entry in document["entries"][17:]:
        entry["leaf"]["seq"] -= 1
    _fails_at(log, document, 17, "does not match the checkpoint")


def test_a_truncated_tail_fails_at_the_first_missing_index(log: Log) -> None:
    document = deep(log.export())
    del document["entries"][-1]
    _fails_at(log, document, N - 1, "1 rows missing at the end")
    del document["entries"][-5:]
    _fails_at(log, document, N - 6, "6 rows missing at the end")


def test_a_reordered_pair_fails_at_the_first_of_the_pair(log: Log) -> None:
    document = deep(log.export())
    entries = document["entries"]
    entries[20], entries[21] = entries[21], entries[20]
    _fails_at(log, document, 20, "found seq 22")
    # Swapping their seq numbers too changes both leaves.
    entries[20]["leaf"]["seq"], entries[21]["leaf"]["seq"] = 21, 22
    _fails_at(log, document, 20, "does not match the checkpoint")


def test_a_full_rewrite_with_recomputed_hashes_fails_on_the_signature(log: Log) -> None:
    # The database owner's attack: rewrite row 10 and rebuild every hash and proof.
    forged = Log(tenant=log.tenant, log_key=Ed25519PrivateKey.generate(), witnesses=log.witnesses)
    forged.leaves = list(log.leaves)
    forged.leaves[9] = AuditLeaf.from_json(
        {**log.leaves[9].to_json(), "action": "consent_withdrawn"}
    )
    _fails_at(log, forged.export(), None, "log signature")


def test_a_rewrite_signed_with_the_stolen_log_key_lacks_the_witnesses(log: Log) -> None:
    # With the log key too, the rewrite is signed, but witnesses that cosigned the
    # real tree refuse an inconsistent one (test_witness.py): no quorum.
    forged = Log(tenant=log.tenant, log_key=log.log_key, witnesses=log.witnesses)
    forged.leaves = list(log.leaves)
    forged.leaves[9] = AuditLeaf.from_json({**log.leaves[9].to_json(), "actor": "someone"})
    document = forged.export()
    document["checkpoint"] = forged.signed(cosigners=0)
    _fails_at(log, document, None, "only 0 of the required 2 witness cosignatures")
    # Copying the real cosignatures onto the forged checkpoint does not help.
    real_lines = log.signed().splitlines(keepends=True)[-3:]
    document["checkpoint"] = forged.signed(cosigners=0) + "".join(real_lines)
    _fails_at(log, document, None, "does not verify")


def test_rows_of_another_tenant_are_refused(log: Log) -> None:
    other = Log(tenant="other", log_key=log.log_key, witnesses=log.witnesses)
    other.append(3)
    document = deep(log.export())
    document["entries"][0]["leaf"] = other.leaves[0].to_json()
    _fails_at(log, document, 0, "tenant 'other'")


def test_a_partial_range_verifies_with_proofs_or_with_a_prefix(log: Log) -> None:
    document = log.export(start=25)
    report = _verify(log, document)
    assert (report.start, report.end, report.proofs_checked) == (25, N, N - 25)
    # Without proofs, a compact range of the leaves before `start` closes the root.
    bare = log.export(start=25, proofs=False)
    prefix = CompactRange()
    prefix.extend(log.hashes()[:25])
    bare["prefix"] = prefix.to_json()
    assert _verify(log, bare).root_recomputed
    bare["entries"][3]["leaf"]["action"] = "edited"
    _fails_at(log, bare, None, "do not hash to the checkpoint's root")
    del bare["prefix"]
    _fails_at(log, bare, None, "without inclusion proofs")


def test_a_shorter_range_needs_asking_for(log: Log) -> None:
    document = deep(log.export())
    document["entries"] = document["entries"][:10]
    _fails_at(log, document, 10, "rows missing at the end")
    assert _verify(log, document, end=10).end == 10


def test_malformed_exports_are_refused(log: Log) -> None:
    document = log.export()
    for broken, match in [
        ({**document, "format": "other"}, "not a kaireon-audit-export/v1"),
        ({**document, "extra": 1}, "unknown export fields"),
        ({**document, "start": -1}, "start must be"),
        ({**document, "checkpoint": "junk"}, "malformed signed note"),
    ]:
        _fails_at(log, broken, None, match)
    bad = deep(document)
    bad["entries"][2]["leaf"]["surprise"] = 1
    _fails_at(log, bad, 2, "unknown fields")
    bad = deep(document)
    bad["entries"][2]["inclusionProof"][0] = "AAAA"
    _fails_at(log, bad, 2, "inclusionProof")


def test_leaves_are_canonical_and_strict() -> None:
    log = Log()
    log.append(1)
    leaf = log.leaves[0]
    raw = leaf.canonical()
    # RFC 8785: sorted keys, no whitespace; every field of the row is there.
    assert raw.startswith(b'{"action":"consent_changed","actor":')
    assert set(json.loads(raw)) == {
        "leafVersion", "tenantId", "seq", "id", "action", "entityType", "entityId",
        "entityIdDigest", "subjectIdDigest", "actor", "changes", "personalDigests", "timestamp",
    }  # fmt: skip
    assert AuditLeaf.from_json(json.loads(raw)) == leaf
    for change, match in [
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"id": "not-a-uuid"}, "UUID"),
        ({"entityId": "cust_001"}, "digest only"),
        ({"entityIdDigest": "ABC"}, "hex SHA-256"),
        ({"timestamp": "2026-12-04T10:00:00Z"}, "timestamp"),
        ({"personalDigests": {"granted": "0" * 64}}, "both personal and not"),
        ({"leafVersion": 2}, "leafVersion"),
        ({"changes": {"x": float("nan")}}, "canonical JSON"),
    ]:
        with pytest.raises(LeafError, match=match):
            AuditLeaf.from_json({**leaf.to_json(), **change}).canonical()


@pytest.mark.slow
def test_the_verify_command_reports_the_first_bad_index(log: Log, tmp_path: Path) -> None:
    logs, witnesses = _keys(log)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(log.export()))
    bad_document = deep(log.export())
    bad_document["entries"][12]["leaf"]["actor"] = "mallory"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_document))
    kaireon = str(Path(sys.executable).with_name("kaireon"))
    args = [kaireon, "verify", "audit", "--log-vkey", logs[0].vkey()]
    for w in witnesses:
        args += ["--witness-vkey", w.vkey()]
    ok = subprocess.run([*args, str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert f"entries [0, {N})" in ok.stdout and "witness0.example/w" in ok.stdout
    broken = subprocess.run([*args, str(bad)], capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1
    assert "leaf index 12:" in broken.stderr and "does NOT verify" in broken.stderr
    # A witness key given as the log key is a usage error, not a verdict.
    wrong = subprocess.run(
        [kaireon, "verify", "audit", "--log-vkey", witnesses[0].vkey(), str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 2 and "bad log vkey" in wrong.stderr


def test_inclusion_proofs_from_a_node_source_match_the_leaf_list(log: Log) -> None:
    hashes = log.hashes()
    source = LeafHashes(hashes)
    signer = Ed25519Signer(log.origin, log.log_key)
    assert signer.key_id == log.signer.key_id
    assert [encode_hash(h) for h in inclusion_proof(source, 7, N)] == [
        encode_hash(h) for h in inclusion_proof(hashes, 7, N)
    ]
