"""`kaireon processors add|list|test|waive`: the recipients erasures are propagated
to (RequestService, docs/REQUESTS.md). What the processor verifies signatures
with (the shared secret, or with `--signing-scheme ed25519` the public key) is
printed once, by `add`."""

from __future__ import annotations

import argparse
from typing import Any

from kaireon.requests.v1 import requests_pb2
from kaireon_client.cli.common import message_to_dict, print_json
from kaireon_client.client import KaireonClient


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("processors", help="processors erasures are propagated to")
    commands = parser.add_subparsers(dest="processors_command", metavar="SUBCOMMAND", required=True)

    add = commands.add_parser("add", help="register a processor (admin); prints its secret once")
    add.add_argument("name", metavar="NAME")
    add.add_argument("url", metavar="URL", help="where signed erasure events are POSTed")
    add.add_argument(
        "--signing-scheme",
        default="",
        metavar="SCHEME",
        help='"hmac" (default: a shared whsec_ secret) or "ed25519" (the server signs, '
        "the processor verifies with a whpk_ public key)",
    )
    add.add_argument(
        "--event",
        action="append",
        default=[],
        dest="events",
        metavar="TYPE",
        help="an event type to send it (repeat; default subject.erased only): "
        "subject.erased, subject.exported, subject.legal_hold",
    )
    add.set_defaults(func=_add)

    listing = commands.add_parser("list", help="processors with their delivery counts")
    listing.set_defaults(func=_list)

    test = commands.add_parser(
        "test", help="send a signed webhook.test event now and show the answer (admin)"
    )
    test.add_argument("processor_id", metavar="PROCESSOR_ID")
    test.set_defaults(func=_test)

    waive = commands.add_parser("waive", help="waive a request's event to a processor (admin)")
    waive.add_argument("request_id", metavar="REQUEST_ID")
    waive.add_argument("processor_id", metavar="PROCESSOR_ID")
    waive.add_argument("--reason", required=True, help="a case note, not personal data")
    waive.set_defaults(func=_waive)


def _add(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.RegisterProcessor(
        requests_pb2.RegisterProcessorRequest(
            name=args.name, url=args.url, signing_scheme=args.signing_scheme, events=args.events
        )
    )
    if args.json:
        print_json(message_to_dict(reply))
    elif reply.public_key:
        print(f"{reply.processor.id}  {reply.processor.name}  public key: {reply.public_key}")
    else:
        print(f"{reply.processor.id}  {reply.processor.name}  secret: {reply.signing_secret}")
    return 0


def _list(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.ListProcessors(requests_pb2.ListProcessorsRequest())
    if args.json:
        print_json(message_to_dict(reply))
        return 0
    for p in reply.processors:
        print(
            f"{p.id}  {p.name:<20} {p.signing_scheme:<7} "
            f"pending={p.pending} delivered={p.delivered} dead={p.dead}  {','.join(p.events)}"
        )
    return 0


def _test(args: argparse.Namespace, client: KaireonClient) -> int:
    """Exit 0 when the processor answered 2xx, 1 otherwise (the answer is printed)."""
    reply = client.requests.TestProcessor(
        requests_pb2.TestProcessorRequest(processor_id=args.processor_id)
    )
    if args.json:
        print_json(message_to_dict(reply))
    else:
        answer = f"HTTP {reply.http_status}" if reply.http_status else reply.error
        outcome = "delivered" if reply.delivered else "not delivered"
        print(f"{reply.webhook_id}  {outcome}: {answer} in {reply.latency_ms} ms")
    return 0 if reply.delivered else 1


def _waive(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.WaiveDelivery(
        requests_pb2.WaiveDeliveryRequest(
            request_id=args.request_id, processor_id=args.processor_id, reason=args.reason
        )
    )
    if args.json:
        print_json(message_to_dict(reply))
    else:
        print(f"{reply.request.id}  {reply.request.state}")
    return 0
