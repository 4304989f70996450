"""RFC 8785 (JCS) canonical JSON: the only form a digest or a signature is taken over.

Shared by the server (producing artefacts) and every verifier (checking them),
so both take digests over the same bytes. `canonical_json` is the fast encoder
of jcs.py: the bytes (and errors) of the `rfc8785` package, property-tested
against it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from kaireon_client.jcs import canonical_json

__all__ = [
    "canonical_digest",
    "canonical_json",
    "format_timestamp",
    "parse_timestamp",
    "sha256_hex",
]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_digest(value: Any) -> str:
    """sha256 hex of the canonical JSON of `value`."""
    return sha256_hex(canonical_json(value))


def format_timestamp(moment: datetime) -> str:
    """A fixed RFC 3339 form (UTC, microseconds, "Z") used inside hashed content."""
    if moment.tzinfo is None:
        raise ValueError("timestamps in hashed content must be timezone-aware")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    if moment.year < 1000:  # strftime writes such a year unpadded: kept as it was
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as the strftime above, at half its cost (every audit row, twice).
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def parse_timestamp(text: str) -> datetime:
    """Inverse of format_timestamp; also accepts other RFC 3339 forms (e.g. protojson's)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    # protojson prints up to nanoseconds; datetime keeps microseconds.
    if "." in value:
        head, _, rest = value.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        value = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(value).astimezone(UTC)
