"""`kaireon-witness serve`: the C2SP tlog-witness HTTP protocol over a real loopback socket,
with a real HTTP client: statuses, the 409 size body, the monitoring checkpoint."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kaireon_client.tlog.checkpoint import open_checkpoint
from kaireon_client.tlog.cosignature import parse_cosignature_vkey
from kaireon_client.tlog.leaf import AuditLeaf
from tests.tlog.support import Log
from tests.tlog.support import add_checkpoint_request as request

pytestmark = pytest.mark.slow

WITNESS = Path(sys.executable).with_name("kaireon-witness")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, Log]]:
    log = Log()
    log.append(8)
    key = tmp_path / "w.key"
    made = subprocess.run(
        [str(WITNESS), "keygen", "--key", str(key), "--name", "witness.example/http"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    proc = subprocess.Popen(
        [
            str(WITNESS),
            "serve",
            "--key",
            str(key),
            "--state",
            str(tmp_path / "state.json"),
            "--log-vkey",
            log.signer.vkey(),
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        yield match.group(1), made.stdout.strip(), log
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def _post(base: str, body: str) -> tuple[int, str, str]:
    req = urllib.request.Request(f"{base}/add-checkpoint", data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers.get("Content-Type", "")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_witness_protocol_over_http(served: tuple[str, str, Log]) -> None:
    base, vkey, log = served
    witness = parse_cosignature_vkey(vkey)
    monitor = f"{base}/{hashlib.sha256(log.origin.encode()).hexdigest()}/checkpoint"
    assert _get(monitor)[0] == 404

    status, body, _ = _post(base, request(log, 0, 5))
    assert status == 200 and body.startswith("— witness.example/http ")
    opened = open_checkpoint(log.signed(5, 0) + body, [log.signer.verifier()], [witness], quorum=1)
    assert opened.checkpoint.size == 5

    # 409: a stale old size; the body is the witness's size.
    status, body, content_type = _post(base, request(log, 0, 8))
    assert (status, body) == (409, "5\n") and content_type.startswith("text/x.tlog.size")

    assert _post(base, request(log, 5, 8))[0] == 200
    status, latest = _get(monitor)
    assert status == 200
    opened = open_checkpoint(latest, [log.signer.verifier()], [witness], quorum=1)
    assert opened.checkpoint.size == 8

    # 422: a rewrite signed with the log key.
    forked = Log(tenant=log.tenant, log_key=log.log_key)
    forked.leaves = list(log.leaves)
    forked.leaves[2] = AuditLeaf.from_json({**log.leaves[2].to_json(), "actor": "mallory"})
    forked.append(1)
    status, body, _ = _post(base, request(forked, 8, 9))
    assert status == 422 and "INCONSISTENT" in body

    # 403, 404, 400.
    impostor = Log(tenant=log.tenant, log_key=Ed25519PrivateKey.generate())
    impostor.leaves = log.leaves
    assert _post(base, request(impostor, 8, 8))[0] == 403
    stranger = Log(tenant="stranger")
    stranger.append(1)
    assert _post(base, request(stranger, 0, 1))[0] == 404
    assert _post(base, "old x\n\nnot a checkpoint\n")[0] == 400
    assert _post(base, "x" * (64 * 1024 + 1))[0] == 413
    assert _get(f"{base}/nothing")[0] == 404
