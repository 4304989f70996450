"""`kaireon requests create|list|show|verify|approve|deny|extend|pause|resume|cancel`:
the data-subject request lifecycle (RequestService, docs/REQUESTS.md).

Every command prints the request after the call (one line, or --json); a
refused transition exits with 1 and the server's reason on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from kaireon.requests.v1 import requests_pb2
from kaireon_client.cli.common import message_to_dict, print_json
from kaireon_client.client import KaireonClient

_RESULTS = {
    "pending": requests_pb2.VERIFICATION_RESULT_PENDING,
    "verified": requests_pb2.VERIFICATION_RESULT_VERIFIED,
    "failed": requests_pb2.VERIFICATION_RESULT_FAILED,
}
HEADER = f"{'ID':<38}{'KIND':<9}{'REGULATION':<11}{'STATE':<22}{'DUE':<12}DAYS"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("requests", help="data-subject request lifecycle")
    commands = parser.add_subparsers(dest="requests_command", metavar="SUBCOMMAND", required=True)

    create = commands.add_parser("create", help="record a received request")
    create.add_argument("kind", choices=("access", "erasure"))
    create.add_argument("subject", metavar="SUBJECT", help="the data subject (customer id)")
    create.add_argument(
        "--regulation",
        default="gdpr",
        help="gdpr (default), uk_gdpr, ccpa or lgpd; the server's list decides and names it",
    )
    create.add_argument(
        "--received",
        metavar="ISO8601",
        type=_received,
        help="when it was received (default: now; UTC unless an offset is given)",
    )
    create.set_defaults(func=_create)

    listing = commands.add_parser("list", help="list requests (newest first, or by due date)")
    add_list_arguments(listing)
    listing.add_argument("--state", default="", help="only requests in this state")
    listing.set_defaults(func=list_requests)

    show = commands.add_parser("show", help="one request with its due date and days left")
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=_show)

    verify = commands.add_parser("verify", help="record an identity verification step")
    verify.add_argument("id", metavar="ID")
    verify.add_argument("--method", required=True, help="e.g. email_link, id_document")
    verify.add_argument(
        "--evidence-ref", required=True, help="where the evidence is kept (never the evidence)"
    )
    verify.add_argument("--result", choices=sorted(_RESULTS), default="verified")
    verify.set_defaults(func=_verify)

    approve = commands.add_parser("approve", help="approve and execute (admin)")
    approve.add_argument("id", metavar="ID")
    approve.add_argument("--reason", default="")
    approve.set_defaults(func=_approve)

    for name, help_text in (
        ("deny", "deny the request (admin)"),
        ("cancel", "cancel the request (e.g. withdrawn)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("id", metavar="ID")
        command.add_argument("--reason", required=True)
        command.set_defaults(func=_deny if name == "deny" else _cancel)

    extend = commands.add_parser("extend", help="extend the deadline within the policy limit")
    extend.add_argument("id", metavar="ID")
    extend.add_argument("--reason", required=True)
    extend.add_argument("--months", type=int, default=0, help="default: all that is left")
    extend.add_argument("--days", type=int, default=0, help="default: all that is left")
    extend.set_defaults(func=_extend)

    pause = commands.add_parser("pause", help="stop the clock")
    pause.add_argument("id", metavar="ID")
    pause.add_argument("--reason", required=True)
    pause.add_argument("--requires-input", action="store_true", help="waiting for the data subject")
    pause.set_defaults(func=_pause)

    resume = commands.add_parser("resume", help="restart the clock")
    resume.add_argument("id", metavar="ID")
    resume.add_argument("--reason", default="")
    resume.set_defaults(func=_resume)


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overdue", action="store_true", help="only open, overdue requests")
    parser.add_argument("--due-before", default="", metavar="YYYY-MM-DD")
    parser.add_argument("--limit", type=int, default=50, help="requests to print (default 50)")


def _line(r: requests_pb2.SubjectRequest) -> str:
    days = f"{r.days_left:+d}" if r.state not in {"completed", "denied", "cancelled"} else "-"
    return f"{r.id}  {r.kind:<8} {r.regulation:<10} {r.state:<21} {r.due_date}  {days}"


def _print(args: argparse.Namespace, requests: Sequence[requests_pb2.SubjectRequest]) -> None:
    if args.json:
        print_json({"requests": [message_to_dict(r) for r in requests]})
        return
    print(HEADER)
    for r in requests:
        print(_line(r))


def _one(args: argparse.Namespace, request: requests_pb2.SubjectRequest) -> int:
    if args.json:
        print_json(request)
    else:
        print(HEADER)
        print(_line(request))
    return 0


def _received(text: str) -> Timestamp:
    """An ISO 8601 instant; a malformed one is a usage error (exit 2), not a traceback."""
    try:
        received = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    stamp = Timestamp()
    stamp.FromDatetime(received if received.tzinfo else received.replace(tzinfo=UTC))
    return stamp


def _create(args: argparse.Namespace, client: KaireonClient) -> int:
    message = requests_pb2.CreateRequestRequest(
        kind=args.kind, subject_id=args.subject, regulation=args.regulation
    )
    if args.received is not None:
        message.receive_time.CopyFrom(args.received)
    return _one(args, client.requests.CreateRequest(message).request)


def list_requests(args: argparse.Namespace, client: KaireonClient) -> int:
    found: list[requests_pb2.SubjectRequest] = []
    token = ""
    while len(found) < args.limit:
        page = client.requests.ListRequests(
            requests_pb2.ListRequestsRequest(
                state=getattr(args, "state", ""),
                due_before=args.due_before,
                overdue=args.overdue,
                page_size=min(500, args.limit - len(found)),
                page_token=token,
            )
        )
        found.extend(page.requests)
        token = page.next_page_token
        if not token:
            break
    _print(args, found)
    return 0


def _show(args: argparse.Namespace, client: KaireonClient) -> int:
    """The request; in text, also each processor's event of an erasure (Art. 19)."""
    reply = client.requests.GetRequest(requests_pb2.GetRequestRequest(id=args.id))
    _one(args, reply.request)
    if not args.json:
        for d in reply.deliveries:
            name, pid = d.processor_name, d.processor_id
            print(f"  processor {name} ({pid}): {d.state}, attempts {d.attempts}")
    return 0


def _verify(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.VerifyIdentity(
        requests_pb2.VerifyIdentityRequest(
            id=args.id,
            method=args.method,
            evidence_reference=args.evidence_ref,
            result=_RESULTS[args.result],
        )
    )
    return _one(args, reply.request)


def _approve(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.ApproveRequest(
        requests_pb2.ApproveRequestRequest(id=args.id, reason=args.reason)
    )
    return _one(args, reply.request)


def _deny(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.DenyRequest(
        requests_pb2.DenyRequestRequest(id=args.id, reason=args.reason)
    )
    return _one(args, reply.request)


def _cancel(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.CancelRequest(
        requests_pb2.CancelRequestRequest(id=args.id, reason=args.reason)
    )
    return _one(args, reply.request)


def _extend(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.ExtendRequest(
        requests_pb2.ExtendRequestRequest(
            id=args.id, reason=args.reason, months=args.months, days=args.days
        )
    )
    return _one(args, reply.request)


def _pause(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.PauseRequest(
        requests_pb2.PauseRequestRequest(
            id=args.id, reason=args.reason, requires_input=args.requires_input
        )
    )
    return _one(args, reply.request)


def _resume(args: argparse.Namespace, client: KaireonClient) -> int:
    reply = client.requests.ResumeRequest(
        requests_pb2.ResumeRequestRequest(id=args.id, reason=args.reason)
    )
    return _one(args, reply.request)
