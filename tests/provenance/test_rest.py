"""GET /api/v1/decisions/{id}/provenance through the server's REST adapter."""

from __future__ import annotations

import hashlib
import json

import aiohttp
import pytest

from tests.provenance.conftest import AFTER_CHANGE, fetch, openssl_verify


@pytest.fixture
async def http(app):
    assert app.http_port, "the session server serves REST"
    async with aiohttp.ClientSession(f"http://127.0.0.1:{app.http_port}") as session:
        yield session


def _headers(tenant: str, role: str = "admin") -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Role": role}


async def test_rest_answers_the_canonical_bytes_with_the_provenance_headers(
    http, channel, seeded, key_dir, tmp_path
):
    async with http.get(
        f"/api/v1/decisions/{AFTER_CHANGE}/provenance", headers=_headers(seeded)
    ) as response:
        assert response.status == 200
        body = await response.read()
        headers = response.headers
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Provenance-Schema"] == "kaireon.provenance.v1"
    assert headers["X-Provenance-Digest"] == hashlib.sha256(body).hexdigest()
    # REST and gRPC give the same bytes for the same decision.
    assert body == (await fetch(channel, seeded, AFTER_CHANGE)).body
    verified = openssl_verify(
        tmp_path, (key_dir / "cosign-test.pub").read_text(), body, headers["X-Provenance-Signature"]
    )
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(
    ("path", "role", "status", "code"),
    [
        ("/api/v1/decisions/dec_missing/provenance", "admin", 404, 5),
        (f"/api/v1/decisions/{AFTER_CHANGE}/provenance", "viewer", 403, 7),
        (f"/api/v1/decisions/{AFTER_CHANGE}/provenance", "operator", 403, 7),
    ],
)
async def test_rest_errors(http, seeded, path, role, status, code):
    async with http.get(path, headers=_headers(seeded, role)) as response:
        assert response.status == status
        error = json.loads(await response.read())
    assert error["code"] == code
    assert "X-Provenance-Digest" not in response.headers


async def test_rest_signing_key(http, seeded, key_dir):
    async with http.get("/api/v1/provenance/signing-key", headers=_headers(seeded, "viewer")) as r:
        assert r.status == 200
        key = await r.json()
    assert key["publicKeyPem"] == (key_dir / "cosign-test.pub").read_text()
    assert key["algorithm"] == "ecdsa-p256-sha256"
