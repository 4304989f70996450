"""An auditor needs only the client wheel: a fresh venv with `kaireon-client` and its
declared dependencies (no server, no test kit) verifies a receipt, a bundle, a DSAR
export package and an audit range produced by a live server, and refuses each one
after a one-byte change with the exit code of what broke (docs/VERIFYING.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon_server.demo.seed import seed_tenant
from kaireon_server.platform.db import Database
from tests.provenance.conftest import AFTER_CHANGE, SMALL_SEED
from tests.support.server import ROOT

# Builds a wheel and a venv, then runs CLIs as subprocesses (slow tier).
pytestmark = pytest.mark.slow
KAIREON = str(Path(sys.executable).parent / "kaireon")
UV = ROOT / ".tools" / "bootstrap" / "bin" / "uv"


def _uv() -> str:
    found = str(UV) if UV.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed to build the client wheel: run tools/dev/setup.sh")
    return found


def _run_sync(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def auditor_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding only the client wheel and its declared dependencies."""
    work = tmp_path_factory.mktemp("auditor")
    uv = _uv()
    built = _run_sync(
        [uv, "build", "--wheel", "--offline", str(ROOT / "clients/python"), "-o", str(work)]
    )
    if built.returncode != 0:  # an empty cache: hatchling from the index
        built = _run_sync([uv, "build", "--wheel", str(ROOT / "clients/python"), "-o", str(work)])
    assert built.returncode == 0, built.stderr
    (wheel,) = work.glob("kaireon_client-*.whl")
    venv = work / "venv"
    made = _run_sync([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    assert made.returncode == 0, made.stderr
    # The dependency versions the project locks (not whatever is newest today).
    frozen = _run_sync([uv, "pip", "freeze", "--python", sys.executable])
    pins = [
        line
        for line in frozen.stdout.splitlines()
        if "==" in line and not line.startswith(("kaireon", "-e"))
    ]
    (work / "constraints.txt").write_text("\n".join(pins) + "\n")
    install = [
        uv, "pip", "install", "--python", str(venv / "bin" / "python"),
        "--constraint", str(work / "constraints.txt"), str(wheel),
    ]  # fmt: skip
    done = _run_sync([*install, "--offline"])
    if done.returncode != 0:  # the cache lacks a package: fetch it
        done = _run_sync(install)
    assert done.returncode == 0, done.stderr
    probe = _run_sync([str(venv / "bin" / "python"), "-c", "import kaireon_server"], cwd=work)
    assert probe.returncode != 0 and "No module named 'kaireon_server'" in probe.stderr
    return venv / "bin"


def verify(bin_dir: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """`kaireon verify …` of the auditor's venv, run outside the repository."""
    return _run_sync([str(bin_dir / "kaireon"), "verify", *map(str, args)], cwd=bin_dir.parent)


@dataclass(frozen=True)
class Artefacts:
    tenant: str
    key: Path
    receipt: Path
    bundle: Path
    export: Path
    audit: Path


async def _cli(*argv: str, stdout_to: Path | None = None) -> str:
    # Asynchronous: the server under test runs in this event loop.
    proc = await asyncio.create_subprocess_exec(
        KAIREON,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    if stdout_to is not None:
        await asyncio.to_thread(stdout_to.write_bytes, out)
    return out.decode()


@pytest.fixture
async def artefacts(
    grpc_target: str, db: Database, tenant: str, key_dir: Path, signing_key_path: Path, tmp_path
) -> Artefacts:
    """One of each, made by the live server and saved as the `kaireon` CLI saves them."""
    await seed_tenant(db, tenant, SMALL_SEED)

    def cli(role: str) -> list[str]:
        return ["--target", grpc_target, "--tenant", tenant, "--role", role]

    bundle, export = tmp_path / "bundle.json", tmp_path / "export.json"
    await _cli(*cli("admin"), "provenance", AFTER_CHANGE, "--out", str(bundle))
    await _cli(*cli("operator"), "dsar", "export", "cust_00002", "--out", str(export), "--quiet")
    receipt = tmp_path / "erasure.json"
    await _cli(*cli("admin"), "--json", "erase", "cust_00001", "--yes", stdout_to=receipt)
    audit = tmp_path / "audit.json"
    await _cli(*cli("admin"), "--json", "audit", "list", "--limit", "100000", stdout_to=audit)
    return Artefacts(tenant, key_dir / "cosign-test.pub", receipt, bundle, export, audit)


def _events(path: Path) -> list[dict[str, object]]:
    events: list[dict[str, object]] = json.loads(path.read_text())["events"]
    return sorted(events, key=lambda e: int(str(e["seq"])))


async def test_the_client_wheel_alone_verifies_each_artefact(auditor_bin: Path, artefacts):
    a = artefacts
    receipt = verify(auditor_bin, "receipt", a.receipt, "--key", a.key)
    assert receipt.returncode == 0, receipt.stdout + receipt.stderr
    assert receipt.stdout.startswith(f"erasure receipt verified: tenant {a.tenant} ")
    assert "cust_00001" not in receipt.stdout  # verdicts carry no personal data

    bundle = verify(auditor_bin, "bundle", a.bundle, "--key", a.key)
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    assert bundle.stdout.startswith("bundle verified (digest, signature, canonical, schema")

    export = verify(auditor_bin, "export", a.export, "--key", a.key)
    assert export.stdout == "export verified (digest, signature, canonical)\n", export.stderr
    # `sha256sum -c` form of the sidecar works as well.
    digest = hashlib.sha256(a.export.read_bytes()).hexdigest()
    Path(f"{a.export}.sha256").write_text(f"{digest}  {a.export.name}\n")  # noqa: ASYNC240
    assert verify(auditor_bin, "export", a.export, "--key", a.key).returncode == 0

    events = _events(a.audit)
    audit = verify(auditor_bin, "audit", a.audit)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert audit.stdout.startswith(f"audit chain verified: {len(events)} rows (seq 1..")
    # A range from mid-chain, pinned to the hash of the row before it.
    cut = len(events) // 2
    (a.audit.parent / "range.json").write_text(json.dumps({"events": events[cut:]}))
    after = f"{events[cut - 1]['seq']}:{events[cut - 1]['integrityHash']}"
    ranged = verify(auditor_bin, "audit", a.audit.parent / "range.json", "--after", after)
    assert ranged.returncode == 0, ranged.stdout + ranged.stderr
    assert f"{len(events) - cut} rows" in ranged.stdout
    wrong = verify(
        auditor_bin, "audit", a.audit.parent / "range.json", "--after", f"{cut}:{'0' * 64}"
    )
    assert wrong.returncode == 1 and "prev_hash_mismatch" in wrong.stdout


def _flip_one_byte(path: Path, old: bytes, new: bytes) -> None:
    body = path.read_bytes()
    assert old in body and len(old) == len(new)
    path.write_bytes(body.replace(old, new, 1))


async def test_one_changed_byte_is_refused_with_the_exit_code_of_what_broke(
    auditor_bin: Path, artefacts, tmp_path
):
    a = artefacts
    # Receipt: the signed payload (digest 3), the signature (4), the response around it (1).
    original = json.loads(a.receipt.read_text())
    for change, code in (
        (lambda d: d["receipt"].update(canonicalPayload=d["receipt"]["canonicalPayload"].replace(a.tenant, a.tenant[:-1] + "x")), 3),
        (lambda d: d["receipt"].update(signature="A" + d["receipt"]["signature"][1:]), 4),
        (lambda d: d.update(totalDeleted=int(d["totalDeleted"]) + 1), 1),
    ):  # fmt: skip
        document = json.loads(json.dumps(original))
        change(document)
        tampered = tmp_path / "receipt-tampered.json"
        tampered.write_text(json.dumps(document))
        result = verify(auditor_bin, "receipt", tampered, "--key", a.key)
        assert result.returncode == code, result.stdout + result.stderr
        assert "erasure receipt does NOT verify" in result.stdout

    # Bundle and export: one byte of the body (the digest decides: 3).
    _flip_one_byte(
        a.bundle,
        b'"schemaVersion":"kaireon.provenance.v1"',
        b'"schemaVersion":"kaireon.provenance.v2"',
    )
    bundle = verify(auditor_bin, "bundle", a.bundle, "--key", a.key)
    assert bundle.returncode == 3 and "FAIL digest" in bundle.stdout, bundle.stdout
    _flip_one_byte(a.export, b"cust_00002", b"cust_00003")
    export = verify(auditor_bin, "export", a.export, "--key", a.key)
    assert export.returncode == 3 and "FAIL signature" in export.stdout, export.stdout

    # Audit: one character of one row's content; the row is named.
    events = _events(a.audit)
    victim = events[len(events) // 2]
    victim["actor"] = str(victim["actor"]) + "x"
    (tmp_path / "audit-tampered.json").write_text(json.dumps({"events": events}))
    audit = verify(auditor_bin, "audit", tmp_path / "audit-tampered.json")
    assert audit.returncode == 1
    assert f"at seq {victim['seq']}" in audit.stdout and "integrity_hash_mismatch" in audit.stdout

    # A key that is not the service's: the signature (4); a non-key: usage (2).
    other = tmp_path / "other.pub"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    original_receipt = tmp_path / "receipt.json"
    original_receipt.write_text(json.dumps(original))
    assert verify(auditor_bin, "receipt", original_receipt, "--key", other).returncode == 4
    assert verify(auditor_bin, "receipt", original_receipt, "--key", a.receipt).returncode == 2


def test_the_client_wheel_alone_verifies_a_transparency_log_export(
    auditor_bin: Path, tmp_path: Path
):
    """The worked example of docs/AUDIT.md: a signed, cosigned checkpoint and its export."""
    example = ROOT / "docs" / "examples" / "audit"
    keys = [
        "--log-vkey", (example / "log.vkey").read_text().strip(),
        "--witness-vkey", (example / "witness1.vkey").read_text().strip(),
        "--witness-vkey", (example / "witness2.vkey").read_text().strip(),
        "--quorum", "2",
    ]  # fmt: skip
    good = verify(auditor_bin, "audit", example / "export.json", *keys)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("audit export verified: ")
    document = json.loads((example / "export.json").read_text())
    document["entries"][1]["leaf"]["actor"] += "x"
    (tmp_path / "export.json").write_text(json.dumps(document))
    bad = verify(auditor_bin, "audit", tmp_path / "export.json", *keys)
    assert bad.returncode == 1 and "leaf index 1:" in bad.stderr
