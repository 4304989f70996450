"""Identity comes from one configured source: the findings of issue #14, re-run on a real server.

Over gRPC and over REST: smuggled identity (Grpc-Metadata-*, other spellings,
repeated headers, a token next to headers) is refused with UNAUTHENTICATED /
401; hostile tokens (wrong alg, bad claim types, "demo\\n", "ADMIN") are 401,
never 500; identity headers count only from KAIREON_TRUSTED_PROXIES peers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kaireon_server.app import App
from kaireon_server.gateway.headers import IDENTITY_KEYS as GATEWAY_IDENTITY_KEYS
from kaireon_server.platform.auth.authenticator import IDENTITY_KEYS
from kaireon_server.platform.config import Settings
from kaireon_server.platform.errors import ConfigurationError
from tests.security.identity_support import (
    AUDIT_PATH,
    RUNS_PATH,
    Victim,
    grpc_audit,
    grpc_runs,
    make_victim,
    raw_token,
    rest_get,
    token,
)
from tests.support.server import JWT_SECRET, metadata

UNAUTH = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
async def victim(channel: grpc.aio.Channel) -> Victim:
    return await make_victim(channel)


def test_gateway_and_server_agree_on_the_identity_keys() -> None:
    assert GATEWAY_IDENTITY_KEYS == IDENTITY_KEYS


# --- finding 1: identity smuggled through the REST adapter -------------------------------


async def _curl(port: int, tenant: str) -> tuple[int, str]:
    """The exact curl of finding 1, against this server and tenant (the server runs
    in this event loop, so curl runs as an asyncio subprocess)."""
    proc = await asyncio.create_subprocess_exec(
        *[
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            f"http://127.0.0.1:{port}{AUDIT_PATH}?pageSize=1",
            "-H",
            "X-Tenant-Id: acme",
            "-H",
            "X-User-Role: viewer",
            "-H",
            f"Grpc-Metadata-X-Tenant-Id: {tenant}",
            "-H",
            "Grpc-Metadata-X-User-Role: admin",
        ],
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


async def test_finding_1_curl_is_refused_with_401(app: App, victim: Victim) -> None:
    for tenant in ("demo", victim.tenant):
        status, body = await _curl(app.http_port, tenant)
        assert status == 401, body
        assert victim.marker not in body and "Grpc-Metadata-X-Tenant-Id" in body


SMUGGLED = [
    [("grpc-metadata-x-tenant-id", "{victim}")],
    [("GRPC-METADATA-X-USER-ROLE", "admin")],
    [("Grpc-Metadata-X_Tenant_Id", "{victim}")],
    [("Grpc-Metadata-X-Tenant-Id-Bin", "ZGVtbw")],
    [("Grpc-Metadata-Authorization", "Bearer x.y.z")],
    [("X_Tenant_Id", "{victim}")],
    [("x-user_role", "admin")],
    [("X-Tenant-Id-Bin", "ZGVtbw")],
    # Repeated identity headers: refused, never resolved first- or last-wins.
    [("X-Tenant-Id", "{victim}")],
    [("X-User-Role", "admin")],
    [("x-tenant-id", "acme")],
    # A token next to identity headers: two sources for one call.
    [("Authorization", "Bearer {token}")],
]


@pytest.mark.parametrize("extra", SMUGGLED, ids=[";".join(k for k, _ in e) for e in SMUGGLED])
async def test_rest_smuggled_identity_is_refused_with_401(
    extra: list[tuple[str, str]], victim: Victim, app: App
) -> None:
    admin_token = token({"tenant_id": victim.tenant, "role": "admin"})
    headers = [("X-Tenant-Id", "acme"), ("X-User-Role", "viewer")] + [
        (k, v.format(victim=victim.tenant, token=admin_token)) for k, v in extra
    ]
    for path in (AUDIT_PATH, RUNS_PATH):
        status, body = await rest_get(app.http_port, path, headers)
        assert status == 401, (path, body)
        assert victim.marker not in body


async def test_rest_without_smuggling_answers_as_the_proxy_said(victim: Victim, app: App) -> None:
    headers = [("X-Tenant-Id", "acme"), ("X-User-Role", "viewer")]
    assert (await rest_get(app.http_port, AUDIT_PATH, headers))[0] == 403
    status, body = await rest_get(app.http_port, RUNS_PATH, headers)
    assert status == 200 and victim.marker not in body
    own = [("X-Tenant-Id", victim.tenant), ("X-User-Role", "admin")]
    status, body = await rest_get(app.http_port, AUDIT_PATH, own)
    assert status == 200 and victim.marker in body


@pytest.mark.parametrize(
    "extra",
    [
        (("x-tenant-id", "{victim}"),),
        (("x-user-role", "admin"),),
        (("x-tenant-id", "acme"),),
        (("authorization", "Bearer {token}"),),
    ],
    ids=["second-tenant", "second-role", "same-tenant-twice", "token-and-headers"],
)
async def test_grpc_repeated_or_mixed_identity_is_unauthenticated(
    extra: tuple[tuple[str, str], ...], victim: Victim, channel: grpc.aio.Channel
) -> None:
    admin_token = token({"tenant_id": victim.tenant, "role": "admin"})
    md = metadata("acme", "viewer") + tuple(
        (k, v.format(victim=victim.tenant, token=admin_token)) for k, v in extra
    )
    for call in (grpc_audit, grpc_runs):
        code, text = await call(channel, md)
        assert code is UNAUTH, (code, text)
        assert victim.marker not in text


# --- findings 4a and 5: strict tokens ---------------------------------------------------


def _bad_tokens(victim: str) -> dict[str, str]:
    now = int(time.time())
    return {
        "tenant-with-newline": token({"tenant_id": f"{victim}\n", "role": "admin"}),
        "tenant-upper": token({"tenant_id": victim.upper(), "role": "admin"}),
        "tenant-not-string": token({"tenant_id": ["x"], "role": "admin"}),
        "role-upper": token({"tenant_id": victim, "role": "ADMIN"}),
        "role-padded": token({"tenant_id": victim, "role": " admin\t"}),
        "role-capitalised": token({"tenant_id": victim, "role": "Admin"}),
        "exp-string": token({"tenant_id": victim, "role": "admin", "exp": str(now + 300)}),
        "exp-bool": token({"tenant_id": victim, "role": "admin", "exp": True}),
        "exp-missing": jwt.encode({"tenant_id": victim, "role": "admin"}, JWT_SECRET),
        "nbf-string": token({"tenant_id": victim, "role": "admin", "nbf": str(now - 10)}),
        "iat-string": token({"tenant_id": victim, "role": "admin", "iat": str(now)}),
        "sub-number": token({"tenant_id": victim, "role": "admin", "sub": 7}),
        "alg-none": raw_token(
            {"alg": "none", "typ": "JWT"},
            {"tenant_id": victim, "role": "admin", "exp": now + 300},
            b"",
        ),
        "bad-base64": "e30.e30!.abc",
        "bad-padding": "e30.eyJ.abc",
        "bad-json": "eyJhbGciOiJIUzI1NiJ9.e25vdCBqc29u.c2ln",
        "not-json-object": ".".join(["WzFd", "WzFd", "abcd"]),
    }


@pytest.mark.parametrize("case", sorted(_bad_tokens("t")))
async def test_hostile_tokens_are_401_over_grpc_and_rest(
    case: str,
    victim: Victim,
    channel: grpc.aio.Channel,
    app: App,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = _bad_tokens(victim.tenant)[case]
    code, text = await grpc_audit(channel, (("authorization", f"Bearer {bad}"),))
    assert code is UNAUTH, (code, text)
    status, body = await rest_get(app.http_port, AUDIT_PATH, [("Authorization", f"Bearer {bad}")])
    assert status == 401, body
    assert victim.marker not in text + body
    # Logged (the refusal and its reason), but never the token or its signature.
    logged = [str(record.__dict__) for record in caplog.records]
    rejected = [r for r in caplog.records if getattr(r, "code", "") == "UNAUTHENTICATED"]
    assert len(rejected) >= 2 and all(r.reason for r in rejected)  # type: ignore[attr-defined]
    tail = bad.rsplit(".", 1)[-1][-12:]
    assert not [line for line in logged if bad in line or (len(tail) >= 8 and tail in line)]


async def test_a_correct_token_is_accepted(
    victim: Victim, channel: grpc.aio.Channel, app: App
) -> None:
    good = token({"tenant_id": victim.tenant, "role": "admin", "nbf": int(time.time()) - 5})
    code, text = await grpc_audit(channel, (("authorization", f"Bearer {good}"),))
    assert code is grpc.StatusCode.OK and victim.marker in text
    status, body = await rest_get(app.http_port, AUDIT_PATH, [("Authorization", f"Bearer {good}")])
    assert status == 200 and victim.marker in body


async def test_identity_headers_are_matched_exactly(
    victim: Victim, channel: grpc.aio.Channel
) -> None:
    for tenant, role in [
        (victim.tenant, "ADMIN"),
        (victim.tenant, "Admin"),
        (victim.tenant.upper(), "admin"),
        (victim.tenant + " ", "admin"),
        (victim.tenant, "admin "),
    ]:
        code, text = await grpc_audit(channel, metadata(tenant, role))
        assert code is UNAUTH, (tenant, role, code, text)


# --- an EdDSA token against an ES256 key (finding 4a) -----------------------------------


@pytest.fixture(scope="module")
def es256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
async def es256_app(
    server_env: dict[str, str], es256_key: ec.EllipticCurvePrivateKey
) -> AsyncIterator[App]:
    pem = es256_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    env = {
        **server_env,
        "KAIREON_JWT_HS256_SECRET": "",
        "KAIREON_JWT_PUBLIC_KEY": pem.decode(),
        "KAIREON_TRUST_HEADERS": "false",
    }
    app = App(Settings.from_env(env))
    await app.start()
    yield app
    await app.stop(grace=1)


async def test_eddsa_token_against_es256_key_is_401(
    es256_app: App, es256_key: ec.EllipticCurvePrivateKey, victim: Victim
) -> None:
    claims = {
        "tenant_id": victim.tenant,
        "role": "admin",
        "sub": "svc",
        "exp": int(time.time()) + 300,
    }
    tokens = {
        "eddsa": jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA"),
        "eddsa-header-es256-signature": raw_token(
            {"alg": "EdDSA", "typ": "JWT"}, claims, b"\x01" * 64
        ),
        "hs256-confusion": jwt.encode(claims, "confusion-" * 8, algorithm="HS256"),
        "es384": jwt.encode(claims, ec.generate_private_key(ec.SECP384R1()), algorithm="ES384"),
    }
    async with grpc.aio.insecure_channel(f"127.0.0.1:{es256_app.grpc_port}") as channel:
        for name, bad in tokens.items():
            code, text = await grpc_audit(channel, (("authorization", f"Bearer {bad}"),))
            assert code is UNAUTH, (name, code, text)
            status, body = await rest_get(
                es256_app.http_port, AUDIT_PATH, [("Authorization", f"Bearer {bad}")]
            )
            assert status == 401, (name, body)
        good = jwt.encode(claims, es256_key, algorithm="ES256")
        code, text = await grpc_audit(channel, (("authorization", f"Bearer {good}"),))
        assert code is grpc.StatusCode.OK and victim.marker in text
        # Trusted headers are off in this deployment: they give nothing.
        code, _ = await grpc_audit(channel, metadata(victim.tenant, "admin"))
        assert code is UNAUTH


# --- trusted proxies ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def far_proxy_app(server_env: dict[str, str]) -> AsyncIterator[App]:
    """Trusts identity headers only from 10.0.0.0/8: loopback callers are not proxies."""
    app = App(Settings.from_env({**server_env, "KAIREON_TRUSTED_PROXIES": "10.0.0.0/8"}))
    await app.start()
    yield app
    await app.stop(grace=1)


async def test_identity_headers_from_an_untrusted_peer_are_refused(
    far_proxy_app: App, victim: Victim
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{far_proxy_app.grpc_port}") as channel:
        for md in (metadata(victim.tenant, "admin"), metadata(victim.tenant, "viewer")):
            code, text = await grpc_runs(channel, md)
            assert code is UNAUTH and "trusted proxies" in text, (code, text)
        for headers in (
            [("X-Tenant-Id", victim.tenant), ("X-User-Role", "viewer")],
            [("X-User-Role", "viewer")],
        ):
            status, body = await rest_get(far_proxy_app.http_port, RUNS_PATH, headers)
            assert status == 401 and "trusted proxies" in body, body
            assert victim.marker not in body
        # A verified token needs no trusted peer, over gRPC and through the adapter's
        # private socket to the server.
        good = token({"tenant_id": victim.tenant, "role": "viewer"})
        code, text = await grpc_runs(channel, (("authorization", f"Bearer {good}"),))
        assert code is grpc.StatusCode.OK and victim.marker in text
        status, body = await rest_get(
            far_proxy_app.http_port, RUNS_PATH, [("Authorization", f"Bearer {good}")]
        )
        assert status == 200 and victim.marker in body


@pytest.mark.parametrize("value", ["10.0.0.0/33", "example.com", "10.0.0.1/8", "10.0.0.0/8;"])
def test_bad_trusted_proxies_stop_start_up(server_env: dict[str, str], value: str) -> None:
    with pytest.raises(ConfigurationError, match="KAIREON_TRUSTED_PROXIES"):
        Settings.from_env({**server_env, "KAIREON_TRUSTED_PROXIES": value})
