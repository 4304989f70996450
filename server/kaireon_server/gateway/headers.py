"""HTTP headers <-> gRPC metadata, and the Grpc-Timeout header."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import cast

from kaireon_server.gateway.errors import RequestError
from kaireon_server.platform.auth.proxies import TrustedProxies

METADATA_PREFIX = "grpc-metadata-"
# Metadata the server reads identity from (platform/auth/authenticator.py). Only the
# forwarded headers themselves may carry it: never Grpc-Metadata-*, never another spelling.
IDENTITY_KEYS = frozenset({"authorization", "x-tenant-id", "x-user-role"})
# Identity a trusted proxy asserts; accepted only from KAIREON_TRUSTED_PROXIES peers.
TRUSTED_IDENTITY_HEADERS = frozenset({"x-tenant-id", "x-user-role"})
# Keys gRPC owns or HTTP/2 forbids; forwarding them breaks the call.
_RESERVED_KEYS = frozenset(
    {"content-type", "te", "user-agent", "host", "connection", "content-length", "authority"}
)
_KEY = re.compile(r"[0-9a-z_.\-]+")
_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# The longest deadline handed to gRPC (about three years): past about 7e9 s its
# deadline arithmetic overflows into one that has already passed, and every call
# would fail at once with DEADLINE_EXCEEDED. Longer asks (99999999H, a default of
# 1e12 meaning "no limit") get this instead.
MAX_DEADLINE_SECONDS = 1e8

Metadata = list[tuple[str, str | bytes]]


class IdentityHeaderError(RequestError):
    """Identity headers the gateway refuses (answered with 401, not forwarded)."""


def _identity_name(name: str) -> str:
    """The identity key a header name spells, whatever its case or separators."""
    lower = name.lower().replace("_", "-")
    if lower.startswith(METADATA_PREFIX):
        lower = lower[len(METADATA_PREFIX) :]
    return lower.removesuffix("-bin")


def request_metadata(
    headers: Iterable[tuple[str, str]],
    forwarded: frozenset[str],
    *,
    remote: str | None = None,
    host: str | None = None,
    trusted_proxies: TrustedProxies | None = None,
) -> Metadata:
    """gRPC metadata of an HTTP request, as grpc-gateway builds it.

    Forwarded headers keep their (lower-case) name, Grpc-Metadata-Foo becomes
    foo (base64-decoded when it ends in -bin); every other header is dropped.
    Identity is refused (IdentityHeaderError) rather than forwarded when it comes
    in any other spelling (Grpc-Metadata-X-Tenant-Id, X_User_Role) or, for the
    trusted identity headers, from a peer outside `trusted_proxies`.
    """
    metadata: Metadata = []
    forwarded_for = ""
    for name, value in headers:
        lower = name.lower()
        identity = _identity_name(name)
        if identity in IDENTITY_KEYS and lower != identity:
            raise IdentityHeaderError(
                f"header {name} is refused: identity comes only from the configured "
                "identity headers or a bearer token"
            )
        if (
            trusted_proxies is not None
            and lower in TRUSTED_IDENTITY_HEADERS
            and not trusted_proxies.allows_host(remote)
        ):
            raise IdentityHeaderError(
                f"header {name} is accepted only from trusted proxies (KAIREON_TRUSTED_PROXIES)"
            )
        if lower == "x-forwarded-for":
            forwarded_for = _ascii(name, value)
        if lower in forwarded:
            metadata.append((lower, _ascii(name, value)))
        elif lower.startswith(METADATA_PREFIX):
            key = lower[len(METADATA_PREFIX) :]
            if not _KEY.fullmatch(key) or key.startswith("grpc-") or key in _RESERVED_KEYS:
                continue
            if key.endswith("-bin"):
                metadata.append((key, _b64(name, value)))
            else:
                metadata.append((key, _ascii(name, value)))
    if host:
        metadata.append(("x-forwarded-host", _ascii("Host", host)))
    if remote:
        # Append to a chain from proxies in front, as grpc-gateway does.
        chain = f"{forwarded_for}, {remote}" if forwarded_for else remote
        metadata.append(("x-forwarded-for", chain))
    return metadata


def _ascii(name: str, value: str) -> str:
    # gRPC metadata values are printable ASCII; anything else fails the call.
    if not all(" " <= char <= "~" for char in value):
        raise RequestError(f"header {name} must be printable ASCII")
    return value


def _b64(name: str, value: str) -> bytes:
    padded = value + "=" * (-len(value) % 4)
    try:
        if "-" in value or "_" in value:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"header {name} must be base64") from None


def canonical_header(key: str) -> str:
    """x-provenance-digest -> X-Provenance-Digest (Go's canonical header form)."""
    return "-".join(part[:1].upper() + part[1:] for part in key.split("-"))


def metadata_pairs(metadata: object) -> Metadata:
    """grpc's metadata (aio.Metadata, a tuple of pairs, None) as (key, value) pairs."""
    if metadata is None:
        return []
    pairs: Metadata = []
    for key, value in cast("Iterable[tuple[object, object]]", metadata):
        pairs.append((str(key), value if isinstance(value, bytes) else str(value)))
    return pairs


def response_headers(
    initial: object, trailing: object, passthrough: frozenset[str]
) -> list[tuple[str, str]]:
    """HTTP headers for the response metadata of a call.

    Header metadata becomes Grpc-Metadata-<Key>; passthrough keys keep their
    own name and are also taken from the trailers, where a trailers-only
    response (an error before any message) carries all its metadata.
    """
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in metadata_pairs(initial):
        if key in passthrough:
            headers.append((canonical_header(key), _text(value)))
            seen.add(key)
        elif not key.startswith("grpc-") and key not in _RESERVED_KEYS:
            headers.append((canonical_header(METADATA_PREFIX + key), _text(value)))
    for key, value in metadata_pairs(trailing):
        if key in passthrough and key not in seen:
            headers.append((canonical_header(key), _text(value)))
    return headers


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def parse_grpc_timeout(value: str) -> float:
    """Seconds of a Grpc-Timeout header ("10S", "500m", "1H"); RequestError if bad."""
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        raise RequestError(f"invalid Grpc-Timeout {value!r}: expected e.g. 10S or 500m")
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


def deadline(headers: Mapping[str, str], default: float | None) -> float | None:
    """The call's timeout in seconds: the Grpc-Timeout header, else the default."""
    raw = headers.get("Grpc-Timeout")
    seconds = default if raw is None else parse_grpc_timeout(raw)
    return None if seconds is None else min(seconds, MAX_DEADLINE_SECONDS)
