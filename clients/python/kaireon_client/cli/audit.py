"""`kaireon audit list|verify`."""

from __future__ import annotations

import argparse
from typing import Any

from kaireon.audit.v1 import audit_pb2
from kaireon_client.cli.common import EXIT_VERIFY_FAILED, message_to_dict, print_json
from kaireon_client.client import KaireonClient


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="read and verify the tenant's audit chain")
    commands = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    listing = commands.add_parser("list", help="list audit events (oldest first)")
    listing.add_argument("--action", help="only this action")
    listing.add_argument("--limit", type=int, default=100, help="events to print (default 100)")
    listing.set_defaults(func=_list)
    verify = commands.add_parser("verify", help="verify the whole chain on the server")
    verify.set_defaults(func=_verify)


def _list(args: argparse.Namespace, client: KaireonClient) -> int:
    events: list[dict[str, Any]] = []
    token = ""
    while len(events) < args.limit:
        page = client.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                page_size=min(1000, args.limit - len(events)),
                page_token=token,
                action=args.action or "",
            )
        )
        events.extend(message_to_dict(e) for e in page.events)
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print_json({"events": events})
    else:
        for e in events:
            entity = f"{e['entityType']}:{e['entityId'] or '-'}"
            print(f"{e['seq']:>6}  {e['createTime']}  {e['action']:<28} {entity}")
    return 0


def _verify(args: argparse.Namespace, client: KaireonClient) -> int:
    result = client.audit.VerifyChain(audit_pb2.VerifyChainRequest())
    if args.json:
        print_json(result)
    elif result.valid:
        print(f"chain valid: {result.rows_checked} rows, head {result.head_hash}")
    else:
        print(f"chain BROKEN at seq {result.first_invalid_seq}: {result.reason}")
    return 0 if result.valid else EXIT_VERIFY_FAILED
