"""`kaireon_client.tlog.evidence` offline: each step refuses what it must, the command's
exit codes, and the worked example of docs/examples/evidence/ verifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kaireon_client.tlog.cosignature import parse_cosignature_vkey
from kaireon_client.tlog.evidence import (
    attach_leaf,
    main,
    receipt_parts,
    verify_export_proof,
    verify_receipt_proof,
)
from kaireon_client.tlog.merkle import inclusion_proof
from kaireon_client.tlog.note import Verifier, parse_ed25519_vkey
from kaireon_client.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof
from tests.tlog.support import Log, make_leaf

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "evidence"


def _example() -> tuple[str, str, bytes, str]:
    receipt = json.loads((EXAMPLE / "receipt.json").read_text())["receipt"]
    return (
        receipt["canonicalPayload"],
        receipt["tlogProof"],
        (EXAMPLE / "export.json").read_bytes(),
        (EXAMPLE / "export.tlog-proof").read_text(),
    )


def _keys() -> tuple[list[Verifier], list[Verifier]]:
    log: list[Verifier] = [parse_ed25519_vkey((EXAMPLE / "log.vkey").read_text().strip())]
    witnesses: list[Verifier] = [
        parse_cosignature_vkey((EXAMPLE / "witness1.vkey").read_text().strip())
    ]
    return log, witnesses


def test_the_worked_example_verifies_with_the_witness_quorum() -> None:
    payload, receipt_proof, export, export_proof = _example()
    log, witnesses = _keys()
    receipt = verify_receipt_proof(payload, receipt_proof, log, witnesses, quorum=1)
    assert receipt.ok, str(receipt)
    assert receipt.leaf is not None and receipt.leaf.action == "gdpr_erasure"
    assert verify_export_proof(export, export_proof, log, witnesses, quorum=1).ok
    # A receipt's proof is not the export's, and the other way round.
    assert verify_export_proof(export, receipt_proof, log).step == "binding"
    assert verify_receipt_proof(payload, export_proof, log).step == "binding"


def _with_leaf(proof: str, leaf: bytes | None) -> str:
    parsed = parse_tlog_proof(proof)
    return format_tlog_proof(TlogProof(parsed.index, parsed.proof, parsed.checkpoint, leaf))


def test_the_leaf_must_be_there_canonical_and_of_the_logs_tenant() -> None:
    payload, proof, _, _ = _example()
    log, _ = _keys()
    leaf = parse_tlog_proof(proof).extra
    assert leaf is not None
    missing = verify_receipt_proof(payload, _with_leaf(proof, None), log)
    assert (missing.step, missing.ok) == ("leaf", False)
    spaced = json.dumps(json.loads(leaf), indent=1).encode()
    assert verify_receipt_proof(payload, _with_leaf(proof, spaced), log).step == "leaf"
    assert attach_leaf(_with_leaf(proof, None), leaf) == proof

    # A log of tenant "other" whose leaf claims tenant "demo": refused, the proof holds.
    other = Log(tenant="other")
    other.leaves = [make_leaf("demo", 1), make_leaf("demo", 2)]
    text = format_tlog_proof(
        TlogProof(
            1,
            tuple(inclusion_proof(other.hashes(), 1, 2)),
            other.signed(),
            other.leaves[1].canonical(),
        )
    )
    verdict = verify_receipt_proof(payload, text, [other.signer.verifier()])
    assert verdict.step == "leaf" and "tenant" in verdict.reason


def test_a_missing_witness_quorum_is_refused() -> None:
    payload, proof, _, _ = _example()
    log, witnesses = _keys()
    cut = proof[: proof.rindex("\n\u2014 witness1")] + "\n"
    verdict = verify_receipt_proof(payload, cut, log, witnesses, quorum=1)
    assert verdict.step == "proof" and "witness" in verdict.reason


def test_receipt_files_in_every_form() -> None:
    payload, proof, _, _ = _example()
    whole = {"receipt": {"canonicalPayload": payload, "tlogProof": proof}}
    assert receipt_parts(json.dumps(whole).encode()) == (payload.encode(), proof)
    assert receipt_parts(json.dumps({"canonical_payload": payload}).encode()) == (
        payload.encode(),
        "",
    )
    assert receipt_parts(payload.encode()) == (payload.encode(), "")


def test_the_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_key = str(EXAMPLE / "log.vkey")
    receipt = str(EXAMPLE / "receipt.json")
    assert main(["receipt", receipt, "--log-key", log_key]) == 0
    assert "verified: receipt: audit row seq 3" in capsys.readouterr().out
    export = str(EXAMPLE / "export.json")
    proof = str(EXAMPLE / "export.tlog-proof")
    assert main(["export", export, "--proof", proof, "--log-key", log_key]) == 0
    # The export changed by one byte: its digest is not the row's.
    changed = tmp_path / "export.json"
    changed.write_bytes(
        (EXAMPLE / "export.json").read_bytes().replace(b"cust_00007", b"cust_00008")
    )
    assert main(["export", str(changed), "--proof", proof, "--log-key", log_key]) == 1
    assert "binding" in capsys.readouterr().err
    # No proof at all (a pending receipt), a key of another log, a bad key.
    pending = tmp_path / "pending.json"
    pending.write_text(json.dumps({"receipt": {"canonicalPayload": "{}", "tlogProof": ""}}))
    assert main(["receipt", str(pending), "--log-key", log_key]) == 1
    other = tmp_path / "other.vkey"
    other.write_text(Log(tenant="demo").signer.vkey() + "\n")
    assert main(["receipt", receipt, "--log-key", str(other)]) == 1
    assert main(["receipt", receipt, "--log-vkey", "not a vkey"]) == 2
    assert main(["receipt", receipt]) == 2


def test_kaireon_verify_receipt_checks_the_proof_when_a_log_key_is_pinned(
    tmp_path: Path,
) -> None:
    kaireon = Path(sys.executable).parent / "kaireon"
    receipt = str(EXAMPLE / "receipt.json")

    def verify(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kaireon), "verify", "receipt", receipt, "--allow-unsigned", *options],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    pinned = verify("--log-key", str(EXAMPLE / "log.vkey"))
    assert pinned.returncode == 0, pinned.stderr
    assert "verified: receipt: audit row seq 3" in pinned.stdout
    other = tmp_path / "other.vkey"
    other.write_text(Log(tenant="demo").signer.vkey() + "\n")
    refused = verify("--log-key", str(other))
    assert refused.returncode == 1 and "proof: log signature" in refused.stderr
    # Without a pinned log key the proof is not looked at (the receipt alone verifies).
    assert verify().returncode == 0
