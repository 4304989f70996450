"""`kaireon-witness`, run as the installed command: it cosigns only checkpoints signed by
the pinned log key and consistent with what it cosigned before, and refuses loudly
(exit code, message, kept evidence) forks, rewrites and rollbacks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.checkpoint import open_checkpoint
from kaireon_client.tlog.cosignature import parse_cosignature_vkey
from kaireon_client.tlog.leaf import AuditLeaf
from kaireon_client.tlog.merkle import encode_hash
from kaireon_client.tlog.note import Ed25519Signer
from tests.tlog.support import Log
from tests.tlog.support import add_checkpoint_request as request

# Each test starts the installed command several times: run once in CI, not per database.
pytestmark = pytest.mark.slow

WITNESS = Path(sys.executable).with_name("kaireon-witness")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WITNESS), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def witness(tmp_path: Path) -> dict[str, str]:
    key = tmp_path / "witness.key"
    made = run("keygen", "--key", str(key), "--name", "witness.example/w1")
    assert made.returncode == 0, made.stderr
    return {"key": str(key), "state": str(tmp_path / "witness.state"), "vkey": made.stdout.strip()}


def cosign(w: dict[str, str], log: Log, body: str) -> subprocess.CompletedProcess[str]:
    return run(
        "cosign",
        "--key",
        w["key"],
        "--state",
        w["state"],
        "--log-vkey",
        log.signer.vkey(),
        stdin=body,
    )


def state(w: dict[str, str], origin: str) -> dict[str, object]:
    return dict(json.loads(Path(w["state"]).read_text())["logs"][origin])


def test_keygen_writes_a_private_key_and_prints_its_vkey(
    witness: dict[str, str], tmp_path: Path
) -> None:
    key = Path(witness["key"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("PRIVATE+KEY+witness.example/w1+")
    verifier = parse_cosignature_vkey(witness["vkey"])
    assert verifier.name == "witness.example/w1"
    assert run("vkey", "--key", str(key)).stdout.strip() == witness["vkey"]
    again = run("keygen", "--key", str(key), "--name", "witness.example/w1")
    assert again.returncode == 2 and "exists" in again.stderr
    # A key others can read is refused before it is used.
    os.chmod(key, 0o644)
    loose = run("vkey", "--key", str(key))
    assert loose.returncode == 2 and "chmod 600" in loose.stderr


def test_cosigns_a_consistent_history_and_refuses_a_fork(witness: dict[str, str]) -> None:
    log = Log()
    log.append(5)
    first = cosign(witness, log, request(log, 0, 5))
    assert first.returncode == 0, first.stderr
    # The answer is a cosignature line that verifies on the checkpoint.
    cosigned = log.signed(5, cosigners=0) + first.stdout
    w = parse_cosignature_vkey(witness["vkey"])
    opened = open_checkpoint(cosigned, [log.signer.verifier()], [w], quorum=1)
    assert opened.checkpoint.size == 5
    assert state(witness, log.origin)["size"] == 5

    log.append(4)
    second = cosign(witness, log, request(log, 5, 9))
    assert second.returncode == 0, second.stderr
    assert state(witness, log.origin)["size"] == 9
    latest = run("latest", "--state", witness["state"], "--origin", log.origin)
    assert latest.returncode == 0
    assert (
        open_checkpoint(latest.stdout, [log.signer.verifier()], [w], quorum=1).checkpoint.size == 9
    )

    # A stale old size: 409 in the protocol; the witness's size on stdout.
    stale = cosign(witness, log, request(log, 5, 9))
    assert stale.returncode == 5 and stale.stdout == "9\n"

    # The database owner rewrites row 4 and, holding the log key, signs the new tree.
    forked = Log(tenant=log.tenant, log_key=log.log_key)
    forked.leaves = list(log.leaves)
    forked.leaves[3] = AuditLeaf.from_json({**log.leaves[3].to_json(), "actor": "mallory"})
    forked.append(3)
    extended = cosign(witness, forked, request(forked, 9, 12))
    assert extended.returncode == 6
    assert "INCONSISTENT CHECKPOINT REFUSED" in extended.stderr
    same_size = cosign(witness, forked, request(forked, 9, 9, signed=forked.signed(9, 0)))
    assert same_size.returncode == 6 and "FORK DETECTED" in same_size.stderr
    # Nothing changed, and the evidence was kept.
    assert state(witness, log.origin)["size"] == 9
    evidence = sorted(Path(witness["state"] + ".refused").iterdir())
    assert len(evidence) == 2 and "mallory" not in evidence[0].read_text()
    assert forked.signed(9, 0).splitlines()[2] in "".join(e.read_text() for e in evidence)

    # A rollback to a smaller tree, whichever old size is claimed.
    rolled = cosign(witness, log, request(log, 9, 7))
    assert rolled.returncode == 2 and "ROLLBACK REFUSED" in rolled.stderr
    rolled = cosign(witness, log, request(log, 0, 7))
    assert rolled.returncode == 5 and "ROLLBACK REFUSED" in rolled.stderr
    assert state(witness, log.origin)["size"] == 9


def test_refuses_unknown_logs_bad_signatures_and_malformed_requests(
    witness: dict[str, str],
) -> None:
    log = Log()
    log.append(3)
    stranger = Log(tenant="stranger")
    stranger.append(3)
    unknown = cosign(witness, log, request(stranger, 0, 3))
    assert unknown.returncode == 4 and "unknown log origin" in unknown.stderr
    # The origin's name, but not the pinned key.
    impostor = Log(tenant=log.tenant, log_key=Ed25519PrivateKey.generate())
    impostor.leaves = log.leaves
    forbidden = cosign(witness, log, request(impostor, 0, 3))
    assert forbidden.returncode == 3 and "not signed by the log key" in forbidden.stderr
    # The pinned key's name and id with a broken signature.
    text = log.signed(3, cosigners=0)
    sig_line = text.splitlines()[-1]
    broken = text.replace(
        sig_line, sig_line[:-8] + ("AAAAAAA=" if sig_line[-8:] != "AAAAAAA=" else "BBBBBBB=")
    )
    bad_sig = cosign(witness, log, f"old 0\n\n{broken}")
    assert bad_sig.returncode in (2, 3)
    for body, match in [
        ("old 0\n" + text, "not a base64 hash"),
        ("old 0\n", "blank line"),
        ("old 00\n\n" + text, "old <size>"),
        ("old -1\n\n" + text, "old <size>"),
        ("new 0\n\n" + text, "old <size>"),
        ("old 0\nnot-a-hash\n\n" + text, "consistency proof"),
        ("old 0\n\n" + text.replace("\n3\n", "\n03\n"), "malformed checkpoint"),
        ("old 0\n" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + "\n" + text, "63"),
    ]:
        refused = cosign(witness, log, body)
        assert refused.returncode == 2, (body, refused.stderr)
        assert match in refused.stderr
    # A proof from size 0 must be empty (422).
    proof_from_zero = cosign(witness, log, f"old 0\n{encode_hash(log.hashes()[0])}\n\n{text}")
    assert proof_from_zero.returncode == 6
    assert not Path(witness["state"]).exists()


def test_concurrent_requests_never_roll_the_witness_back(witness: dict[str, str]) -> None:
    log = Log()
    log.append(16)
    assert cosign(witness, log, request(log, 0, 4)).returncode == 0
    # Many requests from the same old size race; exactly one may win, none rolls back.
    bodies = [request(log, 4, n) for n in (8, 9, 10, 11)]
    procs = [
        subprocess.Popen(
            [
                str(WITNESS),
                "cosign",
                "--key",
                witness["key"],
                "--state",
                witness["state"],
                "--log-vkey",
                log.signer.vkey(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in bodies
    ]
    # Hand every process its request first (they fit a pipe buffer), then wait: they race.
    for proc, body in zip(procs, bodies, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(body)
        proc.stdin.close()
    codes = []
    for proc in procs:
        # The answers are a line or two: the pipes cannot fill up before the exit.
        codes.append(proc.wait(timeout=60))
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert codes.count(0) == 1 and codes.count(5) == len(bodies) - 1
    won = [n for n, code in zip((8, 9, 10, 11), codes, strict=True) if code == 0]
    assert state(witness, log.origin)["size"] == won[0]


def test_the_cosigner_key_is_not_a_log_key(witness: dict[str, str]) -> None:
    log = Log()
    log.append(1)
    # A log vkey (type 0x01) where a witness key is expected, and the reverse.
    wrong = run(
        "cosign",
        "--key",
        witness["key"],
        "--state",
        witness["state"],
        "--log-vkey",
        witness["vkey"],
        stdin=request(log, 0, 1),
    )
    assert wrong.returncode == 2 and "bad log vkey" in wrong.stderr
    assert Ed25519Signer(log.origin, log.log_key).vkey() == log.signer.vkey()
