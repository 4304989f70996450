"""DSAR export benchmark: a 1M-row subject's export vs a raw COPY of row_to_json TO STDOUT.

    .venv/bin/python perf/dsar_bench.py [--rows 1000000] [--rounds 3] [--max-seconds 900]

Uses DATABASE_URL, or an embedded PostgreSQL (pgserver) in a temporary
directory, with a fresh database. Loads one subject's interaction rows (plus a
seeded tenant around it), starts the real server as a separate process (one
export worker, a throwaway signing key) and alternates, per round:

- copy:     `COPY (SELECT row_to_json(t) FROM interaction_history t WHERE
            tenant_id = … AND customer_id = …) TO STDOUT` of the same rows,
            read by this process over one asyncpg connection, nothing else;
- export:   CreateDsarRequest, then the watch stream until completed: the
            worker counts, streams canonical JSON out of PostgreSQL, hashes,
            stores it in chunks, signs it and writes the audit row;
- download: StreamDsarExport of the finished export (for reference).

Throughput is the subject's interaction rows per second. Peak memory is the
growth of the resident set over the phase, sampled every 20 ms: of this
process for copy, of the server process for export and download. Prints a
table with the medians and the export/copy throughput ratio (goal >= 0.5);
exit status 1 with --strict when the goal is missed. Bounded: stops starting
rounds after --max-seconds (at least one round runs).
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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kaireon.dsar.v1 import dsar_pb2, dsar_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kaireon_server.demo.seed import SeedSize, seed_tenant  # noqa: E402
from kaireon_server.platform.config import Settings  # noqa: E402
from kaireon_server.platform.db import connect_database  # noqa: E402
from tests.support.pg import create_database, drop_database, embedded_server  # noqa: E402
from tests.support.server import ServerProcess, base_env  # noqa: E402

GOAL = 0.5
SUBJECT = "cust_bench_subject"
MB = 1024 * 1024


class PeakRss:
    """Samples one process's RSS in a thread; `growth` = peak minus the value at start."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.start_rss = self._process.memory_info().rss
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


@dataclass
class Sample:
    seconds: float
    growth: int
    size: int


@contextlib.contextmanager
def _database() -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    with embedded_server() as server:
        yield str(server.get_uri())


async def _load(dsn: str, tenant: str, rows: int) -> None:
    settings = Settings.from_env({**base_env(dsn), "KAIREON_LOG_LEVEL": "WARNING"})
    db = await connect_database(settings)  # migrates
    try:
        await seed_tenant(db, tenant, SeedSize(customers=200, interactions_per_customer=20))
        async with db.transaction(tenant) as con:
            # Like the seed's interaction rows: a small attributes object per event.
            await con.execute(
                """
                INSERT INTO interaction_history (tenant_id, customer_id, offer_id, channel,
                    event_type, decision_id, occurred_at, attributes)
                SELECT $1, $2, 'OFFER_' || chr(65 + g % 6),
                       (ARRAY['email','sms','web','app'])[1 + g % 4],
                       (ARRAY['recommendation','impression','click','conversion'])[1 + g % 4],
                       CASE WHEN g % 3 = 0 THEN 'dec_' || g END,
                       timestamptz '2026-01-01' + g * interval '1 second',
                       jsonb_build_object('device', (ARRAY['ios','android','desktop'])[1 + g % 3])
                  FROM generate_series(1, $3) g
                """,
                tenant,
                SUBJECT,
                rows,
            )
        async with db.owner_connection() as con:
            await con.execute("VACUUM ANALYZE interaction_history")
    finally:
        await db.close()


async def _copy(dsn: str, tenant: str) -> Sample:
    con = await asyncpg.connect(dsn)
    size = 0

    async def sink(data: bytes) -> None:
        nonlocal size
        size += len(data)

    try:
        with PeakRss(os.getpid()) as rss:
            started = time.perf_counter()
            await con.copy_from_query(
                "SELECT row_to_json(t) FROM interaction_history t "
                "WHERE tenant_id = $1 AND customer_id = $2",
                tenant,
                SUBJECT,
                output=sink,
            )
            seconds = time.perf_counter() - started
    finally:
        await con.close()
    return Sample(seconds, rss.growth, size)


def _md(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", tenant), ("x-user-role", "operator"))


async def _export(stub: Any, tenant: str, pid: int) -> tuple[Sample, str]:
    with PeakRss(pid) as rss:
        started = time.perf_counter()
        created = await stub.CreateDsarRequest(
            dsar_pb2.CreateDsarRequestRequest(request_type="export", subject_id=SUBJECT),
            metadata=_md(tenant),
        )
        last = created.request
        async for item in stub.WatchDsarRequest(
            dsar_pb2.WatchDsarRequestRequest(id=last.id), metadata=_md(tenant)
        ):
            last = item.request
        seconds = time.perf_counter() - started
    if last.status != "completed":
        raise SystemExit(f"export {last.status}: {last.error}")
    return Sample(seconds, rss.growth, last.export_size_bytes), last.id


async def _download(stub: Any, tenant: str, request_id: str, pid: int) -> Sample:
    size = 0
    with PeakRss(pid) as rss:
        started = time.perf_counter()
        async for item in stub.StreamDsarExport(
            dsar_pb2.StreamDsarExportRequest(id=request_id), metadata=_md(tenant)
        ):
            size += len(item.chunk.data)
        seconds = time.perf_counter() - started
    return Sample(seconds, rss.growth, size)


def _server_env(dsn: str, workdir: Path) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = workdir / "bench-signing.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return base_env(
        dsn, COSIGN_KEY=str(key_path), KAIREON_LOG_LEVEL="INFO", KAIREON_DSAR_WORKERS="1"
    )


def _row(name: str, rows: int, samples: list[Sample]) -> str:
    seconds = statistics.median(s.seconds for s in samples)
    growth = max(s.growth for s in samples) / MB
    size = samples[0].size / MB
    return (
        f"{name:34}{seconds:9.2f} s {rows / seconds:12,.0f} {growth:10.1f} MB "
        f"{size:9.1f} MB {len(samples):5d}"
    )


async def run(args: argparse.Namespace) -> int:
    tenant = f"bench{secrets.token_hex(4)}"
    with _database() as admin_dsn, tempfile.TemporaryDirectory(prefix="kaireon-dsar-bench-") as tmp:
        dsn = await create_database(admin_dsn, prefix="kaireon_dsar_bench")
        try:
            await _load(dsn, tenant, args.rows)
            server = ServerProcess(_server_env(dsn, Path(tmp)))
            await asyncio.to_thread(server.start)
            assert server.proc is not None
            pid = server.proc.pid
            copies: list[Sample] = []
            exports: list[Sample] = []
            downloads: list[Sample] = []
            deadline = time.monotonic() + args.max_seconds
            try:
                async with grpc.aio.insecure_channel(server.target) as channel:
                    stub = dsar_pb2_grpc.DsarServiceStub(channel)
                    for round_no in range(args.rounds):
                        if round_no and time.monotonic() > deadline:
                            print(f"time limit reached after {round_no} rounds", file=sys.stderr)
                            break
                        # Alternate which goes first, so drift favours neither.
                        if round_no % 2 == 0:
                            copies.append(await _copy(dsn, tenant))
                            export, request_id = await _export(stub, tenant, pid)
                        else:
                            export, request_id = await _export(stub, tenant, pid)
                            copies.append(await _copy(dsn, tenant))
                        exports.append(export)
                        downloads.append(await _download(stub, tenant, request_id, pid))
                        if args.verbose:
                            print(
                                f"round {round_no + 1}: copy {copies[-1].seconds:.2f} s, "
                                f"export {export.seconds:.2f} s, "
                                f"download {downloads[-1].seconds:.2f} s",
                                file=sys.stderr,
                            )
                    version = await _version(dsn)
            finally:
                server.stop()
        finally:
            await drop_database(admin_dsn, dsn)
    ratio = statistics.median(s.seconds for s in copies) / statistics.median(
        s.seconds for s in exports
    )
    verdict = "PASS" if ratio >= GOAL else "MISSED"
    print(f"DSAR export benchmark: one subject with {args.rows:,} interaction rows, {version}")
    print(f"{'':34}{'median':>11} {'rows/s':>12} {'peak RSS +':>13} {'bytes':>12} {'runs':>5}")
    print(_row("COPY row_to_json TO STDOUT (client)", args.rows, copies))
    print(_row("DSAR export (server process)", args.rows, exports))
    print(_row("DSAR download (server process)", args.rows, downloads))
    print(f"{'throughput ratio export / COPY':34}{ratio:9.2f}     goal >= {GOAL:.2f}   {verdict}")
    return 1 if args.strict and ratio < GOAL else 0


async def _version(dsn: str) -> str:
    con = await asyncpg.connect(dsn)
    try:
        return "PostgreSQL " + str(await con.fetchval("SHOW server_version"))
    finally:
        await con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="interaction rows of the subject"
    )
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each phase")
    parser.add_argument("--max-seconds", type=float, default=900, help="time bound")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    if args.rows < 1000 or args.rounds < 1:
        parser.error("--rows must be >= 1000 and --rounds >= 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
