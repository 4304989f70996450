"""`kaireon`: the command-line client.

Subcommands live in sibling modules (audit, dsar, erase, flow, provenance, requests,
verify), each
exposing `register(subparsers)`; a subcommand sets `func(args, client) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from kaireon_client.cli.common import EXIT_USAGE, report_rpc_error
from kaireon_client.client import KaireonClient
from kaireon_client.config import ClientConfig

SUBCOMMAND_MODULES: Sequence[str] = (
    "audit",
    "dsar",
    "erase",
    "holds",
    "flow",
    "processors",
    "provenance",
    "keys",
    "requests",
    "verify",
)


def _seconds(text: str) -> float:
    """A --timeout value: a finite number of seconds above zero (not NaN, inf or -1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaireon",
        description="Client for the Kaireon compliance plane (gRPC).",
        epilog="Defaults come from KAIREON_TARGET, KAIREON_TENANT, KAIREON_ROLE, KAIREON_TOKEN, "
        "KAIREON_CA_CERT, KAIREON_CLIENT_CERT, KAIREON_CLIENT_KEY.",
    )
    parser.add_argument("--target", help="server address host:port (default localhost:50051)")
    parser.add_argument("--tenant", help="tenant id (trusted-header mode)")
    parser.add_argument("--role", help="viewer, operator or admin (trusted-header mode)")
    parser.add_argument("--token", help="bearer token (JWT)")
    parser.add_argument("--timeout", type=_seconds, help="deadline of unary calls in seconds")
    parser.add_argument("--ca-cert", help="CA bundle: connect with TLS")
    parser.add_argument("--client-cert", help="client certificate for mTLS")
    parser.add_argument("--client-key", help="client key for mTLS")
    parser.add_argument("--json", action="store_true", help="print raw JSON responses")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module_name = f"kaireon_client.cli.{name}"
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(subparsers)
    return parser


def config_from_args(args: argparse.Namespace) -> ClientConfig:
    return ClientConfig.from_env(
        target=args.target,
        tenant=args.tenant,
        role=args.role,
        token=args.token,
        timeout=args.timeout,
        ca_cert=Path(args.ca_cert) if args.ca_cert else None,
        client_cert=Path(args.client_cert) if args.client_cert else None,
        client_key=Path(args.client_key) if args.client_key else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    offline = getattr(args, "offline", False)
    target = ""
    try:
        if offline:
            return int(func(args, None))
        try:
            config = config_from_args(args)
        except ValueError as exc:  # e.g. KAIREON_TIMEOUT=soon
            print(f"kaireon: bad client setting: {exc}", file=sys.stderr)
            return EXIT_USAGE
        target = config.target
        with KaireonClient(config) as client:
            return int(func(args, client))
    except grpc.RpcError as exc:
        return report_rpc_error(exc, target)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
