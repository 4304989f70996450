"""The auth matrix, for one method of every served service: no identity, bad token,
wrong role, right role (headers and JWT)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from kaireon_server.platform.auth.authenticator import Authenticator
from kaireon_server.platform.auth.identity import Role
from kaireon_server.platform.auth.policy import build_policy
from kaireon_server.platform.config import JwtSettings
from kaireon_server.platform.errors import Unauthenticated
from tests.support.server import JWT_SECRET, bearer, metadata


def _methods_under_test(app) -> list[tuple[MethodDescriptor, Role]]:
    """Per service, its most privileged method (so a lower role must be refused)."""
    chosen = []
    for capability in app.capabilities:
        policy = build_policy([capability.descriptor])
        method = max(
            capability.descriptor.methods,
            key=lambda m: policy[f"/{m.containing_service.full_name}/{m.name}"],
        )
        chosen.append((method, policy[f"/{method.containing_service.full_name}/{method.name}"]))
    return chosen


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, md: Any) -> grpc.StatusCode:
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            call = channel.unary_stream(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )(request_cls(), metadata=md, timeout=10)
            async for _ in call:
                break
            call.cancel()
        else:
            await channel.unary_unary(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )(request_cls(), metadata=md, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _lower_role(role: Role) -> str:
    return Role(max(Role.VIEWER, role - 1)).name.lower() if role > Role.VIEWER else "nobody"


async def test_matrix_covers_every_served_service(app) -> None:
    served = {c.descriptor.full_name for c in app.capabilities}
    assert "kaireon.audit.v1.AuditService" in served
    assert len(_methods_under_test(app)) == len(served)


@pytest.mark.parametrize(
    "case",
    [
        "no_identity",
        "no_tenant",
        "bad_tenant",
        "bad_jwt",
        "expired_jwt",
        "wrong_secret",
        "wrong_role",
        "right_role_headers",
        "right_role_jwt",
    ],
)
async def test_auth_matrix(app, channel, tenant, case) -> None:
    for method, min_role in _methods_under_test(app):
        role = min_role.name.lower()
        md = {
            "no_identity": (),
            "no_tenant": (("x-user-role", role),),
            "bad_tenant": metadata("Bad Tenant!", role),
            "bad_jwt": (("authorization", "Bearer not.a.jwt"),),
            "expired_jwt": bearer(tenant, role, expires_in=-60),
            "wrong_secret": bearer(
                tenant, role, secret="another-secret-that-is-long-enough-0123456789"
            ),
            "wrong_role": metadata(tenant, _lower_role(min_role)),
            "right_role_headers": metadata(tenant, role),
            "right_role_jwt": bearer(tenant, role),
        }[case]
        code = await _call(channel, method, md)
        name = f"{method.containing_service.name}.{method.name}"
        if case == "wrong_role":
            expected = (
                grpc.StatusCode.PERMISSION_DENIED
                if min_role > Role.VIEWER
                else grpc.StatusCode.UNAUTHENTICATED
            )
            assert code == expected, name
        elif case.startswith("right_role"):
            assert code not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ), name
        else:
            assert code == grpc.StatusCode.UNAUTHENTICATED, (name, code)


def test_headers_are_ignored_unless_trusted() -> None:
    auth = Authenticator(JwtSettings(hs256_secret=JWT_SECRET), trust_headers=False)
    with pytest.raises(Unauthenticated):
        auth.authenticate({"x-tenant-id": "demo", "x-user-role": "admin"})
    token = dict(bearer("demo", "operator"))["authorization"]
    identity = auth.authenticate({"authorization": token})
    assert (
        identity.tenant_id == "demo"
        and identity.role == Role.OPERATOR
        and identity.subject == "test-user"
    )


def test_token_without_claims_is_refused() -> None:
    import time

    import jwt as pyjwt

    auth = Authenticator(JwtSettings(hs256_secret=JWT_SECRET), trust_headers=False)
    token = pyjwt.encode({"sub": "x", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        auth.authenticate({"authorization": f"Bearer {token}"})


def test_es256_public_key_tokens() -> None:
    import time

    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = Authenticator(
        JwtSettings(public_key_pem=public_pem, audience="kaireon"), trust_headers=False
    )
    claims = {
        "tenant_id": "acme",
        "role": "admin",
        "sub": "svc",
        "aud": "kaireon",
        "exp": int(time.time()) + 60,
    }
    good = pyjwt.encode(claims, key, algorithm="ES256")
    assert auth.authenticate({"authorization": f"Bearer {good}"}).role == Role.ADMIN
    # An HS256 token signed with the public key text must not pass (algorithm confusion).
    forged = pyjwt.encode(
        claims, "a-different-secret-used-for-forging-0123456789", algorithm="HS256"
    )
    with pytest.raises(Unauthenticated):
        auth.authenticate({"authorization": f"Bearer {forged}"})
    wrong_aud = pyjwt.encode({**claims, "aud": "other"}, key, algorithm="ES256")
    with pytest.raises(Unauthenticated):
        auth.authenticate({"authorization": f"Bearer {wrong_aud}"})


@pytest.mark.parametrize(
    "pairs",
    [
        [("x-tenant-id", "demo"), ("x-tenant-id", "acme"), ("x-user-role", "admin")],
        [("x-tenant-id", "demo"), ("x-user-role", "viewer"), ("x-user-role", "admin")],
        [("x-tenant-id", "demo"), ("X-Tenant-Id", "demo"), ("x-user-role", "admin")],
        [("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")],
        [("authorization", "Bearer a.b.c"), ("x-tenant-id", "demo"), ("x-user-role", "admin")],
    ],
    ids=["tenant-twice", "role-twice", "same-tenant-twice", "token-twice", "token-and-headers"],
)
def test_repeated_or_mixed_identity_is_refused(pairs: list[tuple[str, str]]) -> None:
    auth = Authenticator(JwtSettings(hs256_secret=JWT_SECRET), trust_headers=True)
    with pytest.raises(Unauthenticated) as info:
        auth.authenticate(pairs, "ipv4:127.0.0.1:1")
    assert info.value.reason in {"DUPLICATE_IDENTITY", "AMBIGUOUS_IDENTITY"}


def test_trusted_headers_need_a_trusted_peer() -> None:
    auth = Authenticator(JwtSettings(hs256_secret=JWT_SECRET), trust_headers=True)
    headers = [("x-tenant-id", "demo"), ("x-user-role", "admin")]
    assert auth.authenticate(headers, "ipv4:127.0.0.1:1").tenant_id == "demo"
    for peer in ("ipv4:192.0.2.1:1", None, ""):
        with pytest.raises(Unauthenticated) as info:
            auth.authenticate(headers, peer)
        assert info.value.reason == "UNTRUSTED_PEER"


def test_public_key_decides_the_algorithm() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from kaireon_server.platform.errors import ConfigurationError

    def pem(key) -> str:
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    for bad in (
        pem(ec.generate_private_key(ec.SECP384R1())),
        pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
    ):
        with pytest.raises(ConfigurationError):
            Authenticator(JwtSettings(public_key_pem=bad), trust_headers=False)
