"""Verify a tenant's audit chain offline, from a JSON dump, trusting nothing but the dump.

    kaireon --json audit list --limit 100000000 > audit.json
    python tools/verify_audit_chain.py audit.json

The dump is ListAuditEvents JSON: {"events": [...]} (or a bare list, or several
pages as a list of such objects). Every row's integrity hash is recomputed from
its content (RFC 8785) and every prevHash link and sequence number is checked.
Exit 0 when the chain verifies, 1 at the first row that does not (printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kaireon_server.platform.audit_chain import verify_rows
from kaireon_server.platform.canonical import format_timestamp, parse_timestamp


def _events(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict):
        return list(document.get("events", []))
    if isinstance(document, list):
        events: list[dict[str, Any]] = []
        for item in document:
            events.extend(_events(item) if isinstance(item, dict) and "events" in item else [item])
        return events
    raise ValueError("expected {'events': [...]} or a list")


def normalise(event: dict[str, Any]) -> dict[str, Any]:
    """A ListAuditEvents event (protojson, camelCase) in the form the hash is taken over."""
    personal_digests = dict(event.get("personalDigests") or {})
    # Personal values (when not yet redacted) are shown merged into changes;
    # they are committed through their digests, not as plain changes.
    changes = {k: v for k, v in (event.get("changes") or {}).items() if k not in personal_digests}
    return {
        "tenantId": event.get("tenantId", ""),
        "seq": int(event["seq"]),
        "id": event["id"],
        "action": event["action"],
        "entityType": event["entityType"],
        "entityId": event.get("entityId") or None,
        "entityIdDigest": event.get("entityIdDigest") or None,
        "actor": event["actor"],
        "changes": changes,
        "personalDigests": personal_digests,
        "timestamp": format_timestamp(parse_timestamp(event["createTime"])),
        "prevHash": event.get("prevHash", ""),
        "integrityHash": event["integrityHash"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", type=Path, help="ListAuditEvents JSON dump ('-' for stdin)")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if str(args.dump) == "-" else args.dump.read_text()
    rows = sorted((normalise(e) for e in _events(json.loads(text))), key=lambda r: r["seq"])
    result = verify_rows(rows)
    if result.valid:
        print(f"audit chain valid: {result.rows_checked} rows, head {result.head_hash or '-'}")
        return 0
    where = f"seq {result.first_invalid_seq}" + (
        f" (id {result.first_invalid_id})" if result.first_invalid_id else ""
    )
    print(f"audit chain BROKEN at {where}: {result.reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
