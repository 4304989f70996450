"""KAIREON_TRUSTED_PROXIES parsing, peer matching, and the adapter's identity-header rules."""

from __future__ import annotations

import pytest

from kaireon_server.gateway.headers import IdentityHeaderError, request_metadata
from kaireon_server.platform.auth.proxies import TrustedProxies, TrustedProxiesError

FORWARDED = frozenset({"x-tenant-id", "x-user-role", "authorization"})
LOOPBACK = TrustedProxies.parse(None)


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.9.9.9:1", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:%5B::1%5D:5000", True),  # how grpc-core writes it: a client of localhost
        ("ipv6:[::ffff:127.0.0.1]:5000", True),  # IPv4-mapped
        ("unix:", True),  # the in-process adapter's private socket
        ("ipv4:10.0.0.1:5000", False),
        ("ipv6:[fe80::1%eth0]:5000", False),
        ("ipv6:::1:5000", False),  # no brackets: not a gRPC peer string
        ("ipv4:127.0.0.1", False),  # no port: the host part is "127.0.0.1"'s prefix
        ("", False),
        (None, False),
        ("dns:localhost:1", False),
        # Only grpc-core's bracket escapes are decoded, once, in an ipv6 peer's host.
        ("ipv6:%255B::1%255D:5000", False),  # double-encoded brackets
        ("%75nix:", False),  # an encoded scheme is not "unix:"
        ("ipv4%3A127.0.0.1:5000", False),
        ("ipv4:127.0.0.1%3A5000", False),
        ("ipv6:%5B%3A%3A1%5D:5000", False),  # encoded address text
        ("ipv6:%5Bfe80::1%25eth0%5D:5000", False),
        ("ipv6:%5b::1%5d:5000", True),  # hex digits of either case
    ],
)
def test_default_trusts_loopback_peers_only(peer: str | None, trusted: bool) -> None:
    assert LOOPBACK.allows_grpc_peer(peer) is trusted


def test_configured_networks_replace_the_default() -> None:
    proxies = TrustedProxies.parse(" 10.0.0.0/8 , 2001:db8::/32,")
    assert proxies.allows_host("10.1.2.3") and proxies.allows_host("2001:db8::5")
    assert not proxies.allows_host("127.0.0.1") and not proxies.allows_host("::1")
    assert not proxies.allows_host("10.0.0.1\n") and not proxies.allows_host("localhost")


@pytest.mark.parametrize("text", ["10.0.0.0/33", "10.0.0.1/8", "example.com", "1.2.3.4/8;"])
def test_bad_networks_are_refused(text: str) -> None:
    with pytest.raises(TrustedProxiesError):
        TrustedProxies.parse(text)


def _metadata(
    headers: list[tuple[str, str]], remote: str = "127.0.0.1"
) -> list[tuple[str, object]]:
    return list(request_metadata(headers, FORWARDED, remote=remote, trusted_proxies=LOOPBACK))


@pytest.mark.parametrize(
    "name",
    [
        "Grpc-Metadata-X-Tenant-Id",
        "grpc-metadata-x-user-role",
        "GRPC-METADATA-AUTHORIZATION",
        "Grpc-Metadata-X-Tenant-Id-Bin",
        "Grpc-Metadata-X_User_Role",
        "X_Tenant_Id",
        "x-user_role",
        "X-Tenant-Id-Bin",
        "Authorization-Bin",
    ],
)
def test_identity_in_any_other_spelling_is_refused(name: str) -> None:
    with pytest.raises(IdentityHeaderError):
        _metadata([("X-Tenant-Id", "acme"), ("X-User-Role", "viewer"), (name, "ZGVtbw")])


def test_identity_headers_pass_from_trusted_peers_and_other_metadata_still_does() -> None:
    pairs = _metadata(
        [("X-Tenant-Id", "acme"), ("X-User-Role", "viewer"), ("Grpc-Metadata-Trace", "t1")]
    )
    assert ("x-tenant-id", "acme") in pairs and ("trace", "t1") in pairs


def test_identity_headers_from_an_untrusted_peer_are_refused_but_tokens_pass() -> None:
    with pytest.raises(IdentityHeaderError, match="trusted proxies"):
        _metadata([("X-User-Role", "viewer")], remote="192.0.2.7")
    pairs = _metadata([("Authorization", "Bearer a.b.c")], remote="192.0.2.7")
    assert ("authorization", "Bearer a.b.c") in pairs


def test_repeated_identity_headers_are_all_forwarded_for_the_server_to_refuse() -> None:
    pairs = _metadata([("X-Tenant-Id", "acme"), ("x-tenant-id", "demo")])
    assert [v for k, v in pairs if k == "x-tenant-id"] == ["acme", "demo"]
