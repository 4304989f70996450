"""`kaireon holds set|release|list`: legal holds, which block a customer's erasure.

A hold's reason is shown in the error that refuses an erasure, so it is a case
reference ("CASE-2026-0042"), never personal data. Setting a hold needs the
admin role, as erasure does; so does listing (docs/ERASURE.md).
"""

from __future__ import annotations

import argparse
from typing import Any

from kaireon.erasure.v1 import erasure_pb2
from kaireon_client.cli.common import message_to_dict, print_json
from kaireon_client.client import KaireonClient


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "holds",
        help="set, release and list legal holds (a hold refuses erasure)",
        description="Legal holds of the tenant: a customer under hold cannot be erased "
        "until the hold is released.",
    )
    commands = parser.add_subparsers(dest="holds_command", metavar="SUBCOMMAND", required=True)

    put = commands.add_parser("set", help="hold a customer (replaces the reason of a held one)")
    put.add_argument("customer", metavar="CUSTOMER")
    put.add_argument(
        "--reason", required=True, help='a case reference such as "CASE-2026-0042" (no PII)'
    )
    put.set_defaults(func=_set)

    release = commands.add_parser("release", help="lift a customer's hold")
    release.add_argument("customer", metavar="CUSTOMER")
    release.set_defaults(func=_release)

    listing = commands.add_parser("list", help="list the tenant's holds")
    listing.add_argument("--limit", type=int, default=100, help="holds to print (default 100)")
    listing.set_defaults(func=_list)


def _line(hold: erasure_pb2.LegalHold) -> str:
    created = hold.create_time.ToJsonString()
    return f"{hold.customer_id}  {created}  {hold.created_by:<16} {hold.reason}"


def _set(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.erasure.SetLegalHold(
        erasure_pb2.SetLegalHoldRequest(customer_id=args.customer, reason=args.reason)
    )
    if args.json:
        print_json(reply)
    else:
        print(f"held {reply.legal_hold.customer_id}: {reply.legal_hold.reason}")
    return 0


def _release(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.erasure.ReleaseLegalHold(
        erasure_pb2.ReleaseLegalHoldRequest(customer_id=args.customer)
    )
    if args.json:
        print_json(reply)
    else:
        print(f"released {reply.legal_hold.customer_id} (was: {reply.legal_hold.reason})")
    return 0


def _list(args: argparse.Namespace, client: KaireonClient) -> int:
    holds: list[erasure_pb2.LegalHold] = []
    token = ""
    while len(holds) < max(args.limit, 0):
        page = client.erasure.ListLegalHolds(
            erasure_pb2.ListLegalHoldsRequest(
                page_size=min(1000, args.limit - len(holds)), page_token=token
            )
        )
        holds.extend(page.legal_holds)
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print_json({"legalHolds": [message_to_dict(h) for h in holds]})
    elif not holds:
        print("no legal holds")
    else:
        for hold in holds:
            print(_line(hold))
    return 0
