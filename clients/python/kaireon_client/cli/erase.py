"""`kaireon erase CUSTOMER [--dry-run] [--yes]`: GDPR Art. 17 erasure of one customer.

An erasure cannot be undone, so it is confirmed first: on a terminal the CLI
asks (showing tenant and customer); a script passes --yes; without either and
without a terminal on stdin it refuses (exit 2) and erases nothing. --dry-run
deletes nothing and needs no confirmation.

`kaireon --json erase CUSTOMER --yes` prints the whole response, receipt
included, in the form `kaireon verify receipt` reads.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from kaireon.erasure.v1 import erasure_pb2
from kaireon_client.cli.common import EXIT_USAGE, fail, message_to_dict, print_json
from kaireon_client.client import KaireonClient
from kaireon_client.config import ClientConfig


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
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="erase without asking (needed when stdin is not a terminal)",
    )
    parser.set_defaults(func=_erase)


def tenant_label(config: ClientConfig) -> str:
    """The tenant the server will act on, for the confirmation prompt (display only)."""
    if config.tenant:
        return config.tenant
    if config.token:
        try:
            payload = config.token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            tenant = claims["tenant_id"]
            # Shown on the operator's terminal: no control characters from a token.
            if isinstance(tenant, str) and tenant.isprintable():
                return f"{tenant} (from the token)"
            return "the token's tenant"
        except (IndexError, KeyError, TypeError, ValueError):
            return "the token's tenant"
    return "(no tenant given)"


def confirmed(customer: str, tenant: str) -> bool | None:
    """Ask on the terminal; None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    prompt = (
        f"Erase every personal-data row of customer {customer!r} in tenant {tenant}?\n"
        "This cannot be undone. Type the customer id to confirm: "
    )
    # The prompt goes to stderr: stdout stays the answer (e.g. --json for a pipe).
    sys.stderr.write(prompt)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip() == customer


def _erase(args: argparse.Namespace, client: KaireonClient) -> int:
    if not args.dry_run and not args.yes:
        tenant = tenant_label(client.config)
        answer = confirmed(args.customer, tenant)
        if answer is None:
            return fail(
                f"refusing to erase {args.customer!r} in tenant {tenant} without confirmation: "
                "stdin is not a terminal; pass --yes to erase from a script "
                "(or --dry-run to preview)",
                EXIT_USAGE,
            )
        if not answer:
            return fail("not confirmed; nothing was erased", EXIT_USAGE)
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
