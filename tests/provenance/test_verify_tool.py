"""`kaireon verify bundle|export` and kaireon_client.verify: offline checks that can fail."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon_client.verify import verify_audit_links
from tests.provenance.conftest import AFTER_CHANGE, fetch

KAIREON = str(Path(sys.executable).parent / "kaireon")


def kaireon(*args):
    return subprocess.run([KAIREON, *map(str, args)], capture_output=True, text=True, check=False)


def kaireon_verify(kind: str, *args):
    return kaireon("verify", kind, *args)


def _sign(key_path, body: bytes) -> str:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def _package(path: Path, body: bytes, signature: str, *, sha256sum_form: bool = False) -> Path:
    """FILE, FILE.sig and FILE.sha256 as `kaireon provenance --out` writes them."""
    path.write_bytes(body)
    Path(f"{path}.sig").write_text(signature + "\n")
    digest = hashlib.sha256(body).hexdigest()
    Path(f"{path}.sha256").write_text(
        f"{digest}  {path.name}\n" if sha256sum_form else digest + "\n"
    )
    return path


@pytest.fixture
async def saved(channel, seeded, tmp_path, signing_key_path):
    got = await fetch(channel, seeded, AFTER_CHANGE)
    bundle = _package(tmp_path / "bundle.json", got.body, got.signature)
    public = signing_key_path.parent / "cosign-test.pub"
    return got, bundle, public


async def test_a_genuine_bundle_verifies(saved):
    _, bundle, public = saved
    result = kaireon_verify("bundle", bundle, "--key", public, "--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "PASS digest",
        "PASS signature",
        "PASS canonical",
        "PASS schema",
        "PASS audit-links",
    ]
    # auditLog seqs 2, 4, 5: one neighbour link (4 -> 5), one gap (2 -> 4).
    assert "3 entries, 1 neighbour links verified, 1 gaps" in result.stdout
    assert lines[-1] == "bundle verified (digest, signature, canonical, schema, audit-links)"


async def test_the_sha256sum_sidecar_form_is_accepted(saved, tmp_path):
    got, _, public = saved
    other = tmp_path / "other"
    other.mkdir()
    bundle = _package(other / "b.json", got.body, got.signature, sha256sum_form=True)
    assert kaireon_verify("bundle", bundle, "--key", public).returncode == 0
    # A sidecar naming another file does not vouch for this one.
    Path(f"{bundle}.sha256").write_text(f"{got.digest}  bundle.json\n")  # noqa: ASYNC240
    named = kaireon_verify("bundle", bundle, "--key", public)
    assert named.returncode == 3 and "FAIL digest" in named.stdout


async def test_a_flipped_byte_fails_digest_and_signature(saved, tmp_path):
    got, bundle, public = saved
    tampered = bytearray(got.body)
    tampered[len(tampered) // 2] ^= 0x01
    bundle.write_bytes(bytes(tampered))
    result = kaireon_verify("bundle", bundle, "--key", public)
    assert result.returncode == 3  # the digest decides
    assert "FAIL digest" in result.stdout and "FAIL signature" in result.stdout
    as_json = kaireon("--json", "verify", "bundle", bundle, "--key", public)
    report = json.loads(as_json.stdout)
    outcome = {c["name"]: c["ok"] for c in report["checks"]}
    assert report["ok"] is False
    assert outcome["digest"] is False and outcome["signature"] is False


async def test_another_key_fails_the_signature(saved, tmp_path):
    _, bundle, _ = saved
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "other.pub").write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = kaireon_verify("bundle", bundle, "--key", tmp_path / "other.pub")
    assert result.returncode == 4
    assert "FAIL signature: signature does not verify" in result.stdout


async def test_unsigned_is_refused_unless_allowed(saved):
    _, bundle, public = saved
    Path(f"{bundle}.sig").write_text("unsigned\n")  # noqa: ASYNC240
    refused = kaireon_verify("bundle", bundle, "--key", public)
    assert refused.returncode == 4
    assert 'FAIL signature: artifact is "unsigned"' in refused.stdout
    allowed = kaireon_verify("bundle", bundle, "--allow-unsigned")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


async def test_a_broken_audit_link_is_reported(saved, tmp_path, signing_key_path):
    got, _, public = saved
    bundle = json.loads(got.body)
    bundle["auditLog"][2]["prevHash"] = "0" * 64  # seq 5 no longer follows seq 4
    body = rfc8785.dumps(bundle)
    # Re-signed with the real key, so only the link check can catch it.
    relinked = _package(tmp_path / "relinked.json", body, _sign(signing_key_path, body))
    result = kaireon_verify("bundle", relinked, "--key", public, "--verbose")
    assert result.returncode == 1
    assert "PASS signature" in result.stdout
    assert "FAIL audit-links" in result.stdout
    assert "prevHash does not match the integrityHash of seq 4" in result.stdout


async def test_any_signed_canonical_json_artifact(tmp_path, signing_key_path):
    export = {"requestId": "dsar_1", "data": {"interactions": [1, 2]}, "schema": "dsar.export.v1"}
    body = rfc8785.dumps(export)
    public = signing_key_path.parent / "cosign-test.pub"
    path = _package(tmp_path / "export.json", body, _sign(signing_key_path, body))
    ok = kaireon_verify("export", path, "--key", public, "--verbose")
    assert ok.returncode == 0, ok.stdout
    assert [line.split(":")[0] for line in ok.stdout.splitlines()[:-1]] == [
        "PASS digest",
        "PASS signature",
        "PASS canonical",
    ]
    pretty = json.dumps(export, indent=2).encode()
    path = _package(tmp_path / "pretty.json", pretty, _sign(signing_key_path, pretty))
    not_canonical = kaireon_verify("export", path, "--key", public)
    assert not_canonical.returncode == 1
    assert "FAIL canonical" in not_canonical.stdout


def test_unreadable_input_is_a_usage_error(tmp_path):
    result = kaireon_verify("export", tmp_path / "missing.json")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
    (tmp_path / "lone.json").write_text("{}")
    no_sidecar = kaireon_verify("export", tmp_path / "lone.json")
    assert no_sidecar.returncode == 2 and "lone.json.sha256" in no_sidecar.stderr


def _entry(seq, prev, digest):
    return {
        "id": f"id{seq}",
        "seq": seq,
        "action": "a",
        "prevHash": prev,
        "integrityHash": digest,
        "timestamp": "2026-01-01T00:00:00.000000Z",
    }


H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


def test_audit_links_genesis_neighbours_and_gaps():
    links = verify_audit_links([_entry(1, "", H1), _entry(2, H1, H2), _entry(7, "f" * 64, H3)])
    assert links.ok and links.links_checked == 1 and links.gaps == 1


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([_entry(1, "", H1), _entry(2, H3, H2)], "prevHash does not match"),
        ([_entry(2, H1, H2), _entry(2, H2, H3)], "does not follow"),
        ([_entry(3, "", H1)], "prevHash is not 64 hex digits"),
        ([_entry(1, "", "XYZ")], "integrityHash is not 64 hex digits"),
        ([_entry(1, "", H1), _entry(3, H2, H1)], "repeats an earlier entry"),
        ([{"seq": 1}], "id missing"),
    ],
)
def test_audit_links_problems(entries, problem):
    links = verify_audit_links(entries)
    assert not links.ok
    assert any(problem in p for p in links.problems), links.problems
