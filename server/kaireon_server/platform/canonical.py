"""Canonical JSON and hashed-content timestamps: the client's implementation.

The artefact formats live in `kaireon_client` (docs/ARCHITECTURE.md), so the
server produces exactly the bytes an auditor's client checks.
"""

from __future__ import annotations

from kaireon_client.canonical import (
    canonical_digest,
    canonical_json,
    format_timestamp,
    parse_timestamp,
    sha256_hex,
)

__all__ = [
    "canonical_digest",
    "canonical_json",
    "format_timestamp",
    "parse_timestamp",
    "sha256_hex",
]
