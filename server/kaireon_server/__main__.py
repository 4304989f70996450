"""`kaireon-server` / `python -m kaireon_server`."""

from __future__ import annotations

import argparse
import sys

# Before anything imports grpc: C-core reads its settings once, at import.
from kaireon_server.platform.env import quiet_grpc_core

quiet_grpc_core()

from kaireon_server.platform.config import Settings  # noqa: E402
from kaireon_server.platform.errors import ConfigurationError  # noqa: E402
from kaireon_server.platform.logging_setup import configure_logging  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kaireon-server",
        description="Kaireon compliance plane: gRPC server (and REST adapter).",
        epilog="Configuration comes from environment variables; see the README.",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="seed the demo tenant at start-up if it is empty (and trust identity headers "
        "unless KAIREON_TRUST_HEADERS says otherwise)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(demo=args.demo)
    except ConfigurationError as exc:
        print(f"kaireon-server: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from kaireon_server.app import serve
    from kaireon_server.platform import event_loop
    from kaireon_server.supervisor import supervise

    try:
        if settings.workers > 1:
            return event_loop.run(supervise(settings, demo=args.demo), settings.event_loop)
        return event_loop.run(serve(settings), settings.event_loop)
    except ConfigurationError as exc:
        print(f"kaireon-server: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
