"""Erasure benchmark: EraseCustomer of a 100k-row customer vs a raw SQL DELETE of the same rows.

    .venv/bin/python perf/erasure_bench.py [--rows 100000] [--rounds 5] [--max-seconds 300]

Starts the real server in-process (gRPC on a free port, a throwaway signing
key, DATABASE_URL or an embedded PostgreSQL in a temporary directory), loads
one customer's rows spread over every table erasure deletes from (plus other
customers' rows and audit rows about the customer), then alternates:

- raw:   one transaction of `DELETE ... WHERE tenant_id = $1 AND customer_id = $2`
         per table, over one asyncpg connection, nothing else;
- erase: the EraseCustomer RPC (auth, hold check, registry read, retained
         counts, the same deletes, audit redaction, the audit row, the signed
         receipt), timed at the gRPC client.

Each measurement starts from the same freshly loaded, vacuumed and analysed
tables. Prints a table with the medians and their ratio (goal <= 1.5x); exit
status 1 with --strict when the goal is missed. Bounded: stops after
--max-seconds even when rounds remain (at least one round of each runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon.erasure.v1 import erasure_pb2, erasure_pb2_grpc
from kaireon_server import app as app_module
from kaireon_server.app import App
from kaireon_server.audit import service as audit_service
from kaireon_server.erasure import service as erasure_service
from kaireon_server.platform import data_map
from kaireon_server.platform.audit_chain import append_audit
from kaireon_server.platform.config import Settings

GOAL = 1.5
CUSTOMER = "cust_bench"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# Share of the customer's rows per table (sums to 1).
SHARES = {
    "interaction_history": 0.45,
    "interaction_summary": 0.08,
    "suppression": 0.04,
    "decision_trace": 0.10,
    "attribution_result": 0.05,
    "variant_assignment": 0.03,
    "identity_link": 0.03,
    "journey_enrollment": 0.03,
    "delivery": 0.09,
    "ds": 0.10,
}


def _rows(
    table: str, tenant: str, customer: str, n: int
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """`n` rows of `customer` for `table`, unique where the table's key needs it."""
    at = [EPOCH + timedelta(seconds=i) for i in range(n)]
    if table == "interaction_history":
        return (
            ["tenant_id", "customer_id", "offer_id", "channel", "event_type", "occurred_at"],
            [(tenant, customer, "OFFER_A", "web", "impression", at[i]) for i in range(n)],
        )
    if table == "interaction_summary":
        return (
            [
                "tenant_id",
                "customer_id",
                "offer_id",
                "channel",
                "impressions",
                "last_interaction_at",
            ],
            [(tenant, customer, f"OFFER_{i}", "web", i, at[i]) for i in range(n)],
        )
    if table == "suppression":
        return (
            ["tenant_id", "customer_id", "policy_id", "reason", "created_at"],
            [(tenant, customer, "cap", "cooldown", at[i]) for i in range(n)],
        )
    if table == "decision_trace":
        return (
            ["tenant_id", "id", "customer_id", "decided_at", "channel", "attributes"],
            [(tenant, f"dec_{customer}_{i}", customer, at[i], "web", {"k": i}) for i in range(n)],
        )
    if table == "attribution_result":
        return (
            ["tenant_id", "customer_id", "offer_id", "outcome", "attributed_at"],
            [(tenant, customer, "OFFER_A", "conversion", at[i]) for i in range(n)],
        )
    if table == "variant_assignment":
        return (
            ["tenant_id", "customer_id", "experiment_id", "variant", "assigned_at"],
            [(tenant, customer, f"exp_{i}", "control", at[i]) for i in range(n)],
        )
    if table == "identity_link":
        return (
            [
                "tenant_id",
                "cluster_id",
                "customer_id",
                "identifier_type",
                "identifier_value",
                "linked_at",
            ],
            [(tenant, "c1", customer, "email", f"p{i}@example.com", at[i]) for i in range(n)],
        )
    if table == "journey_enrollment":
        return (
            ["tenant_id", "customer_id", "journey_id", "state", "enrolled_at"],
            [(tenant, customer, f"j{i}", "active", at[i]) for i in range(n)],
        )
    if table == "delivery":
        return (
            ["tenant_id", "customer_id", "offer_id", "channel", "destination", "status", "sent_at"],
            [
                (tenant, customer, "OFFER_A", "email", "p@example.com", "sent", at[i])
                for i in range(n)
            ],
        )
    # The registered dynamic table.
    return (["tenant_id", "customer_id", "seq"], [(tenant, customer, i) for i in range(n)])


@dataclass
class Bench:
    # Loads rows; the raw DELETEs run on their own connection, as the server's do.
    con: asyncpg.Connection
    raw_con: asyncpg.Connection
    tenant: str
    ds_table: str
    rows: int
    tables: list[tuple[str, str]] = field(default_factory=list)  # (table, subject column)

    async def setup(self, background_customers: int) -> None:
        await self.con.execute(
            f'CREATE TABLE "{self.ds_table}" (tenant_id text NOT NULL, customer_id text NOT NULL, '
            "seq integer NOT NULL)"
        )
        await self.con.execute(f'CREATE INDEX ON "{self.ds_table}" (tenant_id, customer_id)')
        await self.con.execute(
            "INSERT INTO schema_registry (tenant_id, schema_id, table_name, entity_type) "
            "VALUES ($1, 'bench', $2, 'customer')",
            self.tenant,
            self.ds_table,
        )
        present = {
            r["t"]
            for r in await self.con.fetch(
                "SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL",
                [t.table for t in data_map.erasure_order()],
            )
        }
        self.tables = [
            (t.table, t.subject_column) for t in data_map.erasure_order() if t.table in present
        ]
        self.tables.append((self.ds_table, "customer_id"))
        # Other customers' rows, so the deletes go through real index scans.
        per = max(10, self.rows // max(1, background_customers))
        for n in range(background_customers):
            await self._load(f"other_{n:05d}", per)

    async def _load(self, customer: str, total: int) -> None:
        for table, count in self._count_per_table_for(total).items():
            if count == 0:
                continue
            name = self.ds_table if table == "ds" else table
            columns, records = _rows(table, self.tenant, customer, count)
            await self.con.copy_records_to_table(name, records=records, columns=columns)

    def _count_per_table_for(self, total: int) -> dict[str, int]:
        counts = {t: int(total * share) for t, share in SHARES.items()}
        counts["interaction_history"] += total - sum(counts.values())
        return counts

    async def load_customer(self) -> None:
        await self._load(CUSTOMER, self.rows)
        async with self.con.transaction():
            # Audit rows about the customer, for the redaction step to work on.
            for i in range(20):
                await append_audit(
                    self.con,
                    self.tenant,
                    action="bench_event",
                    entity_type="customer",
                    entity_id=CUSTOMER,
                    actor="bench",
                    personal={"note": f"n{i}"},
                    entity_id_is_personal=True,
                    subject_id=CUSTOMER,
                )
        names = ", ".join(f'"{t}"' for t, _ in self.tables)
        await self.con.execute(f"VACUUM (ANALYZE) {names}, audit_log")
        # Flush the load's WAL now, so no checkpoint lands inside a measurement.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await self.con.execute("CHECKPOINT")

    async def raw_delete(self) -> tuple[float, int]:
        started = time.perf_counter()
        deleted = 0
        async with self.raw_con.transaction():
            for table, column in self.tables:
                status = await self.raw_con.execute(
                    f'DELETE FROM "{table}" WHERE tenant_id = $1 AND "{column}" = $2',
                    self.tenant,
                    CUSTOMER,
                )
                deleted += int(status.split()[-1])
        return time.perf_counter() - started, deleted


async def _erase(
    stub: erasure_pb2_grpc.ErasureServiceStub, tenant: str, customer: str = CUSTOMER
) -> tuple[float, int]:
    started = time.perf_counter()
    reply = await stub.EraseCustomer(
        erasure_pb2.EraseCustomerRequest(customer_id=customer),
        metadata=(("x-tenant-id", tenant), ("x-user-role", "admin")),
        timeout=300,
    )
    return time.perf_counter() - started, reply.total_deleted


def _env(workdir: Path) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = workdir / "bench-signing.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    env = {
        "KAIREON_TRUST_HEADERS": "true",
        "KAIREON_GRPC_HOST": "127.0.0.1",
        "KAIREON_GRPC_PORT": "0",
        "KAIREON_HTTP_PORT": "0",
        "KAIREON_DATA_DIR": str(workdir / "data"),
        "KAIREON_LOG_LEVEL": "WARNING",
        "COSIGN_KEY": str(key_path),
        "KAIREON_ERASURE_TIMEOUT_MS": "300000",
    }
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    return env


def _stats(values: list[float]) -> str:
    return (
        f"{statistics.median(values):9.3f} s {min(values):9.3f} s {max(values):9.3f} s"
        f" {len(values):6d}"
    )


async def _measure(
    args: argparse.Namespace, bench: Bench, stub: erasure_pb2_grpc.ErasureServiceStub
) -> tuple[list[float], list[float]]:
    deadline = time.monotonic() + args.max_seconds
    raw: list[float] = []
    erase: list[float] = []
    for round_no in range(args.rounds):
        if round_no > 0 and time.monotonic() > deadline:
            print(f"time limit reached after {round_no} rounds", file=sys.stderr)
            break
        # Alternate which goes first, so drift favours neither.
        order = ("raw", "erase") if round_no % 2 == 0 else ("erase", "raw")
        for mode in order:
            await bench.load_customer()
            if mode == "raw":
                seconds, deleted = await bench.raw_delete()
                raw.append(seconds)
            else:
                seconds, deleted = await _erase(stub, bench.tenant)
                erase.append(seconds)
            if args.verbose:
                print(f"round {round_no + 1} {mode:5} {seconds:.3f} s", file=sys.stderr)
            if deleted != args.rows:
                raise SystemExit(f"{mode} deleted {deleted} rows, expected {args.rows}")
    return raw, erase


async def run(args: argparse.Namespace) -> int:
    # Serve the erasure (and audit) services only: other capabilities' background
    # work (job workers, listeners) would otherwise be measured with it.
    app_module.CAPABILITIES = (audit_service.build, erasure_service.build)
    with tempfile.TemporaryDirectory(prefix="kaireon-erasure-bench-") as tmp:
        app = App(Settings.from_env(_env(Path(tmp))))
        await app.start()
        try:
            assert app.db is not None
            tenant = f"bench{secrets.token_hex(4)}"
            # Owner connections (DDL, COPY, the raw DELETE ceiling outside RLS), app codecs.
            async with (
                app.db.owner_connection() as con,
                app.db.owner_connection() as raw_con,
                grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
            ):
                version = await con.fetchval("SHOW server_version")
                bench = Bench(con, raw_con, tenant, f"ds_{tenant}_events", args.rows)
                await bench.setup(args.background_customers)
                stub = erasure_pb2_grpc.ErasureServiceStub(channel)
                raw, erase = await _measure(args, bench, stub)
                # The fixed cost of an erasure: a customer with no rows.
                empty = [(await _erase(stub, tenant, "cust_absent"))[0] for _ in range(20)]
        finally:
            await app.stop(grace=1)
    ratio = statistics.median(erase) / statistics.median(raw)
    verdict = "PASS" if ratio <= GOAL else "MISSED"
    print(
        f"erasure benchmark: {args.rows} rows of one customer over {len(bench.tables)} tables, "
        f"PostgreSQL {version}"
    )
    print(f"{'':24}{'median':>11} {'min':>11} {'max':>11} {'runs':>6}")
    print(f"{'raw SQL DELETE':24}{_stats(raw)}")
    print(f"{'EraseCustomer (gRPC)':24}{_stats(erase)}")
    print(f"{'  same, customer absent':24}{_stats(empty)}")
    print(f"{'ratio (median)':24}{ratio:9.2f} x   goal <= {GOAL:.2f} x   {verdict}")
    return 1 if args.strict and ratio > GOAL else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the erased customer")
    parser.add_argument("--rounds", type=int, default=7, help="measurements of each mode")
    parser.add_argument(
        "--background-customers", type=int, default=200, help="other customers with rows"
    )
    parser.add_argument("--max-seconds", type=float, default=300, help="time bound")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    if args.rows < 100 or args.rounds < 1:
        parser.error("--rows must be >= 100 and --rounds >= 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
