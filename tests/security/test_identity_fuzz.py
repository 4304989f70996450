"""Property: no generated identity input is a server fault or reaches another tenant.

Hypothesis builds header sets (identity names in any case and spelling, with
Grpc-Metadata- prefixes and -bin suffixes, repeats, junk values) and tokens
(wrong secret, hostile claims signed with the real secret, mangled signed
tokens, forged headers), optionally on top of the identity a proxy set for an
attacker tenant. Each set calls an admin-only and a viewer-level method of a
real server over gRPC and over REST. Every answer must be deliberate (never
INTERNAL/UNKNOWN/500) and never contain the victim tenant's data.

Deterministic (derandomized). KAIREON_IDENTITY_FUZZ_EXAMPLES sets the number of
examples per transport (default 150).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections import Counter
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaireon_server.app import App
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
from tests.security.support import NOT_DELIBERATE

EXAMPLES = int(os.environ.get("KAIREON_IDENTITY_FUZZ_EXAMPLES", "150"))
ATTACKER = "acme"
# transport -> outcome -> count; read by the summary test at the end.
STATS: dict[str, Counter[str]] = {"grpc": Counter(), "rest": Counter()}
_GRPC_KEY = re.compile(r"[0-9a-z_.-]+")
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_DELIBERATE_HTTP = frozenset({200, 400, 401, 403, 404})


@pytest.fixture(scope="module")
async def victim(channel: grpc.aio.Channel) -> Victim:
    return await make_victim(channel)


# --- strategies ---------------------------------------------------------------------------


@st.composite
def spelling(draw: st.DrawFn, name: str) -> str:
    """`name` as is (half the time: the refusals must not hide the accepted paths), or in
    some case, with '_' or '-', maybe as Grpc-Metadata-<name>[-bin]."""
    if draw(st.booleans()):
        return draw(st.sampled_from([name, name.title(), name.upper()]))
    text = name.replace("-", "_") if draw(st.booleans()) else name
    prefix = draw(st.sampled_from(["", "", "grpc-metadata-", "Grpc-Metadata-", "GRPC-METADATA-"]))
    suffix = draw(st.sampled_from(["", "", "", "-bin", "-Bin"]))
    mask = draw(st.integers(0, 2**40))
    full = prefix + text + suffix
    return "".join(c.upper() if mask >> (i % 40) & 1 else c.lower() for i, c in enumerate(full))


def tenant_values(victim: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(
        [
            ATTACKER,
            f"{victim}\n",
            f"{victim}\r\n",
            victim.upper(),
            f" {victim}",
            f"{victim} ",
            f"{victim}\t",
            f"{victim},{ATTACKER}",
            f"{ATTACKER},{victim}",
            "",
            "demo\n",
            "a" * 64,
        ]
    ) | st.text(_PRINTABLE, max_size=24)


ROLE_VALUES = st.sampled_from(
    [
        "viewer",
        "ADMIN",
        "Admin",
        " admin",
        "admin ",
        "admin\t",
        "admin\n",
        "root",
        "",
        "viewer,admin",
        "admin,viewer",
        "OPERATOR",
    ]
) | st.text(_PRINTABLE, max_size=12)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def tokens(draw: st.DrawFn, victim: str) -> str:
    now = int(time.time())
    kinds = ["valid", "wrong-secret", "hostile-claims", "mangled", "forged", "junk"]
    kind = draw(st.sampled_from(kinds))
    if kind == "valid":  # the attacker's own token: the accepted path is exercised too
        return token({"tenant_id": ATTACKER, "role": draw(st.sampled_from(["viewer", "admin"]))})
    if kind == "wrong-secret":
        return token({"tenant_id": victim, "role": "admin"}, secret="wrong-" * 10)
    if kind == "hostile-claims":
        claims = {
            "tenant_id": draw(tenant_values(victim) | st.sampled_from([[victim], None, 7, {}])),
            "role": draw(ROLE_VALUES | st.sampled_from([["admin"], None, 3, True])),
            "exp": draw(
                st.sampled_from(
                    [now + 300, str(now + 300), True, None, [now + 300], 1e300, -1, f"{now}.5"]
                )
            ),
        }
        for extra in draw(st.sets(st.sampled_from(["nbf", "iat", "sub"]))):
            claims[extra] = draw(st.sampled_from([str(now), True, None, [1], "x" * 300, 1.5]))
        return token(claims)
    if kind == "mangled":
        good = token({"tenant_id": ATTACKER, "role": "viewer"})
        cut = draw(st.integers(0, len(good)))
        how = draw(st.sampled_from(["truncate", "flip", "insert", "swap-header"]))
        if how == "truncate":
            return good[:cut]
        if how == "flip":
            char = draw(st.sampled_from("A_-.=+/ \x7e0"))
            return good[:cut] + char + good[cut + 1 :]
        if how == "insert":
            return good[:cut] + draw(st.text(_PRINTABLE, max_size=6)) + good[cut:]
        header = {"alg": draw(st.sampled_from(["none", "HS512", "EdDSA", "ES256", "RS256", ""]))}
        return _b64(json.dumps(header).encode()) + good[good.index(".") :]
    if kind == "forged":
        header = {"alg": draw(st.sampled_from(["none", "HS256", "EdDSA", "ES256"])), "typ": "JWT"}
        claims = {"tenant_id": victim, "role": "admin", "exp": now + 300}
        return raw_token(header, claims, draw(st.binary(max_size=72)))
    return draw(st.text("ABCxyz019-_.=+/", max_size=60))


@st.composite
def header_sets(draw: st.DrawFn, victim: str) -> list[tuple[str, str]]:
    """Optionally the attacker's proxy-set identity, then generated identity headers."""
    headers: list[tuple[str, str]] = []
    if draw(st.booleans()):
        headers += [("X-Tenant-Id", ATTACKER), ("X-User-Role", "viewer")]
    for _ in range(draw(st.integers(0, 2) if headers else st.integers(1, 3))):
        name = draw(st.sampled_from(["x-tenant-id", "x-user-role", "authorization"]))
        if name == "x-tenant-id":
            value = draw(tenant_values(victim))
        elif name == "x-user-role":
            value = draw(ROLE_VALUES)
        else:
            scheme = draw(st.sampled_from(["Bearer ", "bearer ", "BEARER ", "Bearer  ", "Basic "]))
            value = scheme + draw(tokens(victim))
        headers.append((draw(spelling(name)), value))
    return headers


def _sendable(value: str, *, grpc_call: bool) -> str:
    """What a client can put on the wire: gRPC refuses tab; HTTP would split at CR/LF."""
    allowed = _PRINTABLE if grpc_call else _PRINTABLE + "\t"
    return "".join(c if c in allowed else "?" for c in value)


_FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# --- the properties -----------------------------------------------------------------------


@_FUZZ_SETTINGS
@given(data=st.data())
async def test_grpc_generated_identity_is_deliberate_and_never_another_tenant(
    data: st.DataObject, victim: Victim, channel: grpc.aio.Channel
) -> None:
    headers = data.draw(header_sets(victim.tenant), label="headers")
    # gRPC metadata keys are lower-case by definition (HTTP/2); other keys cannot be sent.
    md = tuple(
        (k.lower(), _sendable(v, grpc_call=True))
        for k, v in headers
        if _GRPC_KEY.fullmatch(k.lower()) and not k.lower().endswith("-bin")
    )
    for call in (grpc_audit, grpc_runs):
        code, text = await call(channel, md)
        STATS["grpc"][code.name] += 1
        assert code not in NOT_DELIBERATE, (md, code, text)
        assert victim.marker not in text, (md, code)


@_FUZZ_SETTINGS
@given(data=st.data())
async def test_rest_generated_identity_is_deliberate_and_never_another_tenant(
    data: st.DataObject, victim: Victim, app: App
) -> None:
    headers = data.draw(header_sets(victim.tenant), label="headers")
    sent = [(k, _sendable(v, grpc_call=False)) for k, v in headers]
    for path in (AUDIT_PATH, RUNS_PATH):
        status, body = await rest_get(app.http_port, path, sent)
        STATS["rest"][str(status)] += 1
        assert status in _DELIBERATE_HTTP, (sent, status, body)
        assert victim.marker not in body, (sent, status)


def test_summary_no_fault_and_every_transport_fuzzed() -> None:
    """The figure docs/RELIABILITY.md quotes: examples, calls and outcomes per transport."""
    for transport, outcomes in STATS.items():
        assert sum(outcomes.values()) >= 2 * EXAMPLES * 0.9, (transport, outcomes)
    assert not {"INTERNAL", "UNKNOWN"} & set(STATS["grpc"])
    assert "500" not in STATS["rest"]
    # The generated sets do exercise the refusals, not just one path.
    assert STATS["grpc"]["UNAUTHENTICATED"] > 0 and STATS["rest"]["401"] > 0
    print(f"identity fuzz: {dict(STATS['grpc'])} (gRPC), {dict(STATS['rest'])} (REST)")
