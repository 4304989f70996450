"""kaireon-gateway: the REST adapter as its own process, in front of any replica."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

# Before anything imports grpc: its C core would write plain-text lines among
# the JSON logs (platform/env.py GRPC_CORE_DEFAULTS).
from kaireon_server.platform.env import quiet_grpc_core

quiet_grpc_core()

from kaireon_server.gateway.routes import DEFAULT_SERVICES  # noqa: E402
from kaireon_server.gateway.server import GatewayServer  # noqa: E402
from kaireon_server.gateway.settings import GatewaySettings  # noqa: E402
from kaireon_server.platform import event_loop  # noqa: E402
from kaireon_server.platform.errors import ConfigurationError  # noqa: E402


def parse_args(argv: Sequence[str] | None, settings: GatewaySettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kaireon-gateway",
        description="HTTP/JSON gateway to a Kaireon gRPC server (routes from google.api.http).",
    )
    parser.add_argument("--grpc-target", required=True, help="host:port of the gRPC server")
    parser.add_argument(
        "--host", default=settings.http_host, help="address to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=settings.http_port if settings.http_port is not None else 8080,
        help="HTTP port, 0 for any free one (default: KAIREON_HTTP_PORT or 8080)",
    )
    parser.add_argument(
        "--service",
        action="append",
        dest="services",
        help="full name of a service to expose (repeatable; default: the five Kaireon services)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, settings: GatewaySettings) -> None:
    services = args.services or list(DEFAULT_SERVICES)
    gateway = GatewayServer(args.grpc_target, services, settings)
    port = await gateway.start(args.host, args.port)
    # Parsed by scripts that start the gateway on port 0.
    print(f"kaireon-gateway listening on {args.host}:{port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await gateway.stop()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = GatewaySettings.from_env()
    except ConfigurationError as exc:
        # As kaireon-server does: one line naming the variable, exit status 2.
        print(f"kaireon-gateway: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    args = parse_args(argv, settings)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        event_loop.run(serve(args, settings), settings.event_loop)
    except ConfigurationError as exc:
        print(f"kaireon-gateway: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
