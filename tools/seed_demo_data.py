"""Seed a tenant with deterministic synthetic demo data (see server/kaireon_server/demo/seed.py).

    python tools/seed_demo_data.py [--tenant demo] [--customers 50] [--interactions-per-customer 20]

Uses DATABASE_URL, or the embedded PostgreSQL under KAIREON_DATA_DIR (default .kaireon).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from kaireon_server.demo.seed import (
    DEMO_TENANT,
    SeedSize,
    customer_id,
    decision_id,
    seed_tenant,
    tenant_is_empty,
)
from kaireon_server.platform.auth.identity import validate_tenant
from kaireon_server.platform.config import Settings
from kaireon_server.platform.db import connect_database
from kaireon_server.platform.errors import Unauthenticated


async def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(demo=True)
    db = await connect_database(settings)
    try:
        if not await tenant_is_empty(db, args.tenant):
            print(f"tenant {args.tenant!r} already has data; nothing done", file=sys.stderr)
            return 1
        size = SeedSize(
            customers=args.customers,
            interactions_per_customer=args.interactions_per_customer,
            decisions_per_customer=args.decisions_per_customer,
        )
        await seed_tenant(db, args.tenant, size)
    finally:
        await db.close()
    print(f"seeded tenant {args.tenant}: customers {customer_id(1)}..{customer_id(size.customers)}")
    print(
        f"decisions {decision_id(1, 1)}..{decision_id(size.customers, size.decisions_per_customer)}"
    )
    return 0


def _tenant(text: str) -> str:
    # The server's own check: a tenant it would refuse could never be read back.
    try:
        return validate_tenant(text)
    except Unauthenticated as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", type=_tenant, default=DEMO_TENANT)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--interactions-per-customer", type=int, default=20)
    parser.add_argument("--decisions-per-customer", type=int, default=3)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
