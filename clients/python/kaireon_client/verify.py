"""Offline verification of signed canonical JSON: provenance bundles, DSAR exports, any artifact.

Nothing here talks to the service: an auditor checks what they were handed
with the signer's public key alone.

- ``verify_digest``: sha256 hex over exactly the body bytes.
- ``verify_signature``: base64 DER ECDSA P-256 / SHA-256 over the body bytes, as
  ``cosign sign-blob --key`` makes and ``openssl dgst -sha256 -verify`` checks.
- ``is_canonical``: the body is RFC 8785 (JCS) canonical JSON.
- ``verify_audit_links``: an audit-chain *excerpt* (a bundle's ``auditLog``).
  Its entries carry id, seq, action, prevHash, integrityHash and timestamp but
  not the hashed row content, so hashes cannot be recomputed offline. What is
  checked: every entry is well formed (hashes are 64 lower-case hex digits,
  prevHash may be "" only for seq 1), seq strictly increases, integrity hashes
  are unique, and wherever two entries are neighbours in the chain (seq n and
  n+1) the later prevHash equals the earlier integrityHash. Entries further
  apart cannot be linked offline; they are counted as gaps. The full chain,
  hashes recomputed, is verified online by AuditService.VerifyChain and
  offline from a ListAuditEvents dump by `kaireon verify audit` (audit_chain.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from kaireon_client import strict_json
from kaireon_client.jcs import canonical_json
from kaireon_client.signing import UNSIGNED, verify_signature

__all__ = [
    "BUNDLE_SCHEMA",
    "UNSIGNED",
    "AuditLinks",
    "Check",
    "Report",
    "is_canonical",
    "sha256_hex",
    "verify_artifact",
    "verify_audit_links",
    "verify_bundle",
    "verify_digest",
    "verify_signature",
]

BUNDLE_SCHEMA = "kaireon.provenance.v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Check:
    """One verification step and its outcome."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Report:
    """Every check made; the artifact verifies when all passed."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failed(self, name: str) -> bool:
        """True when the check called `name` was made and failed."""
        return any(c.name == name and not c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def verify_digest(body: bytes, expected_hex: str) -> bool:
    """True when `expected_hex` is the sha256 of `body` (case-insensitive hex)."""
    return hmac.compare_digest(sha256_hex(body), expected_hex.strip().lower())


def is_canonical(body: bytes) -> bool:
    """True when `body` is JSON already in RFC 8785 canonical form."""
    try:
        return canonical_json(strict_json.loads(body)) == body
    except (ValueError, rfc8785.CanonicalizationError):
        return False


@dataclass(frozen=True)
class AuditLinks:
    """Outcome of `verify_audit_links`."""

    ok: bool
    entries: int
    links_checked: int
    gaps: int
    problems: tuple[str, ...] = field(default=())


def _entry_problems(index: int, entry: Any) -> list[str]:
    if not isinstance(entry, Mapping):
        return [f"entry {index}: not an object"]
    problems = []
    for name in ("id", "action", "timestamp"):
        if not isinstance(entry.get(name), str) or not entry.get(name):
            problems.append(f"entry {index}: {name} missing")
    seq = entry.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        problems.append(f"entry {index}: seq must be a positive integer")
    if not isinstance(entry.get("integrityHash"), str) or not _HEX64.fullmatch(
        entry["integrityHash"]
    ):
        problems.append(f"entry {index}: integrityHash is not 64 hex digits")
    prev = entry.get("prevHash")
    genesis = seq == 1 and prev == ""
    if not genesis and (not isinstance(prev, str) or not _HEX64.fullmatch(prev)):
        problems.append(f"entry {index}: prevHash is not 64 hex digits")
    return problems


def verify_audit_links(entries: Sequence[Any]) -> AuditLinks:
    """Check an audit-chain excerpt (see the module docstring for what that covers)."""
    problems: list[str] = []
    for index, entry in enumerate(entries):
        problems += _entry_problems(index, entry)
    if problems:
        return AuditLinks(False, len(entries), 0, 0, tuple(problems))
    hashes_seen: set[str] = set()
    links = gaps = 0
    for index, entry in enumerate(entries):
        if entry["integrityHash"] in hashes_seen:
            problems.append(f"entry {index}: integrityHash repeats an earlier entry")
        hashes_seen.add(entry["integrityHash"])
        if index == 0:
            continue
        before = entries[index - 1]
        if entry["seq"] <= before["seq"]:
            problems.append(f"entry {index}: seq {entry['seq']} does not follow {before['seq']}")
        elif entry["seq"] == before["seq"] + 1:
            links += 1
            if entry["prevHash"] != before["integrityHash"]:
                problems.append(
                    f"entry {index}: prevHash does not match the integrityHash "
                    f"of seq {before['seq']}"
                )
        else:
            gaps += 1
    return AuditLinks(not problems, len(entries), links, gaps, tuple(problems))


def _signature_check(
    body: bytes, signature: str | None, public_key_pem: str | bytes | None, allow_unsigned: bool
) -> Check | None:
    if signature is None and public_key_pem is None:
        return None
    if signature is None:
        return Check("signature", False, "a public key was given but no signature")
    if signature.strip() == UNSIGNED:
        if allow_unsigned:
            return Check("signature", True, 'artifact is "unsigned" (accepted on request)')
        return Check("signature", False, 'artifact is "unsigned": refuse it in compliance use')
    if public_key_pem is None:
        return Check("signature", False, "a signature was given but no public key")
    ok = verify_signature(body, signature, public_key_pem)
    detail = "ECDSA P-256 SHA-256 signature verifies" if ok else "signature does not verify"
    return Check("signature", ok, detail)


def verify_artifact(
    body: bytes,
    *,
    digest: str | None = None,
    signature: str | None = None,
    public_key_pem: str | bytes | None = None,
    allow_unsigned: bool = False,
) -> Report:
    """Digest, signature and canonical form of any signed canonical JSON artifact."""
    checks = []
    actual = sha256_hex(body)
    if digest is not None:
        ok = verify_digest(body, digest)
        checks.append(
            Check("digest", ok, f"sha256 {actual}" + ("" if ok else f" != expected {digest}"))
        )
    sig = _signature_check(body, signature, public_key_pem, allow_unsigned)
    if sig is not None:
        checks.append(sig)
    canonical = is_canonical(body)
    checks.append(
        Check(
            "canonical",
            canonical,
            "RFC 8785 canonical JSON" if canonical else "not RFC 8785 canonical JSON",
        )
    )
    return Report(tuple(checks))


def verify_bundle(
    body: bytes,
    *,
    digest: str | None = None,
    signature: str | None = None,
    public_key_pem: str | bytes | None = None,
    allow_unsigned: bool = False,
) -> Report:
    """`verify_artifact` plus the bundle's schema and its auditLog links."""
    report = verify_artifact(
        body,
        digest=digest,
        signature=signature,
        public_key_pem=public_key_pem,
        allow_unsigned=allow_unsigned,
    )
    checks = list(report.checks)
    try:
        bundle = strict_json.loads(body)
    except ValueError:
        return Report((*checks, Check("schema", False, "body is not JSON")))
    schema = bundle.get("schemaVersion") if isinstance(bundle, dict) else None
    checks.append(Check("schema", schema == BUNDLE_SCHEMA, f"schemaVersion {schema!r}"))
    entries = bundle.get("auditLog") if isinstance(bundle, dict) else None
    if not isinstance(entries, list):
        checks.append(Check("audit-links", False, "auditLog missing"))
        return Report(tuple(checks))
    links = verify_audit_links(entries)
    detail = (
        f"{links.entries} entries, {links.links_checked} neighbour links verified, "
        f"{links.gaps} gaps (not linkable offline)"
    )
    if links.problems:
        detail += "; " + "; ".join(links.problems)
    checks.append(Check("audit-links", links.ok, detail))
    return Report(tuple(checks))
