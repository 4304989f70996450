"""`kaireon erase CUSTOMER [--dry-run]`: GDPR Art. 17 erasure of one customer.

`kaireon --json erase CUSTOMER` prints the whole response, receipt included,
in the form `kaireon verify receipt` reads.
"""

from __future__ import annotations

import argparse
from typing import Any

from kaireon.erasure.v1 import erasure_pb2
from kaireon_client.cli.common import message_to_dict, print_json
from kaireon_client.client import KaireonClient


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="erase every personal-data row of one customer (admin)",
        description="Erase one customer of the tenant in one transaction, or preview it with "
        "--dry-run. Kept tables are listed with their legal basis; a legal hold refuses the "
        "erasure (exit 1).",
    )
    parser.add_argument("customer", metavar="CUSTOMER", help="the customer id to erase")
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be erased; delete nothing"
    )
    parser.set_defaults(func=_erase)


def _erase(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.erasure.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id=args.customer, dry_run=args.dry_run)
    )
    if args.json:
        print_json(reply)
        return 0
    for line in render(message_to_dict(reply)):
        print(line)
    return 0


def render(reply: dict[str, Any]) -> list[str]:
    """Human-readable lines of an EraseCustomerResponse (as proto3 JSON)."""
    counts: dict[str, Any] = reply["deletedCounts"]
    verb = "would erase" if reply.get("dryRun") else "erased"
    lines = [f"{verb} {reply['customerId']}: {reply['totalDeleted']} rows"]
    width = max(len(k) for k in counts)
    lines += [f"  {key:<{width}}  {int(value):>8}" for key, value in counts.items()]
    if reply.get("skippedTables"):
        lines.append("skipped (no customer_id column): " + ", ".join(reply["skippedTables"]))
    for table in reply.get("retainedTables", []):
        how = "redacted" if table["retention"] == "RETENTION_REDACTED" else "kept"
        lines.append(
            f"{how}: {table['table']} ({int(table['rowCount'])} rows) - {table['legalBasis']}"
        )
    hold = reply.get("legalHold")
    if hold:
        lines.append(
            f"LEGAL HOLD: {hold['reason']} (by {hold['createdBy']}, {hold['createTime']}); "
            "erasure would be refused"
        )
    receipt = reply.get("receipt")
    if receipt:
        signed = receipt["signature"] != "unsigned"
        lines.append(
            f"receipt: sha256 {receipt['digestSha256']}, "
            + (f"signed by key {receipt['keyId'][:16]}" if signed else "UNSIGNED")
            + " (save it with --json; verify with kaireon verify receipt)"
        )
    return lines
