"""Every command docs/AUDIT.md shows (the blocks marked `<!-- doc-test -->`) runs, from the
repository root, and says what the document says it says; the example files verify."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from kaireon_client.tlog.cosignature import parse_cosignature_vkey
from kaireon_client.tlog.note import parse_ed25519_vkey
from kaireon_client.tlog.verify import VerificationError, verify_export

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "AUDIT.md"
EXAMPLE = ROOT / "docs" / "examples" / "audit"
BLOCKS = re.findall(r"<!-- doc-test -->\n```sh\n(.*?)\n```\n", DOC.read_text(), re.S)


def _run(block: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_document_has_its_four_command_blocks() -> None:
    assert len(BLOCKS) == 4


@pytest.mark.slow
def test_verify_with_the_client() -> None:
    result = _run(BLOCKS[0])
    assert result.returncode == 0, result.stderr
    assert "audit export verified: kaireon.example/audit/demo entries [0, 5)" in result.stdout


def test_verify_the_checkpoint_signature_with_openssl() -> None:
    result = _run(BLOCKS[1])
    assert result.returncode == 0, result.stderr
    verified, key_id = result.stdout.splitlines()
    assert verified == "Signature Verified Successfully"
    assert key_id == (EXAMPLE / "log.vkey").read_text().split("+")[1]


def test_verify_an_inclusion_by_hand() -> None:
    result = _run(BLOCKS[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "included\n"


@pytest.mark.slow
def test_a_witness_by_hand() -> None:
    result = _run(BLOCKS[3])
    assert result.returncode == 0, result.stderr
    vkey, cosig3, cosig5, refused = result.stdout.splitlines()
    assert parse_cosignature_vkey(vkey).name == "witness.example/mine"
    assert cosig3.startswith("— witness.example/mine ") and cosig5.startswith(
        "— witness.example/mine "
    )
    assert refused == "refused with exit 6"
    assert "INCONSISTENT CHECKPOINT REFUSED" in result.stderr


def test_the_checkpoint_shown_is_the_example_and_the_example_verifies() -> None:
    checkpoint = (EXAMPLE / "checkpoint").read_text()
    assert f"```\n{checkpoint}```" in DOC.read_text()
    document = json.loads((EXAMPLE / "export.json").read_text())
    assert document["checkpoint"] == checkpoint
    log = [parse_ed25519_vkey((EXAMPLE / "log.vkey").read_text().strip())]
    witnesses = [
        parse_cosignature_vkey((EXAMPLE / f"witness{i}.vkey").read_text().strip()) for i in (1, 2)
    ]
    report = verify_export(document, log, witnesses, quorum=2)
    assert (report.tree_size, report.proofs_checked) == (5, 5)
    document["entries"][1]["leaf"]["actor"] = "mallory"
    with pytest.raises(VerificationError, match="leaf index 1"):
        verify_export(document, log, witnesses, quorum=2)
