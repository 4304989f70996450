"""Provenance reads: GetDecisionProvenance closed loop over gRPC (vs the echo ceiling,
optionally under py-spy) and REST, then open loop with k6 over both, then REST
again at the highest rate it sustains; then the bulk stream."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import grpc
from google.protobuf import wrappers_pb2

from harness.echo_server import STREAM_COPIES
from harness.report import Row, cpu_per_request
from harness.run import Context
from kaireon.provenance.v1 import provenance_pb2, provenance_pb2_grpc
from kaireon_server.provenance.repository import EMIT_ACTION
from kaireon_testkit.server import metadata

METHOD = "kaireon.provenance.v1.ProvenanceService/GetDecisionProvenance"
STREAM_METHOD = "kaireon.provenance.v1.ProvenanceService/StreamDecisionProvenance"
ECHO_STREAM = "kaireon.perf.v1.Echo/Stream"
# With --profile: where the server's samples go (first match anywhere in the stack).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("audit row (group commit: hashing, insert, transaction)", ("AuditBatcher.", "insert_rows")),
    ("ECDSA signature", ("EcdsaSigner.sign",)),
    ("redaction", ("provenance/redaction.py",)),
    (
        "RFC 8785 + cache + assembly",
        ("encode_rows", "kaireon_client/jcs.py", "provenance/cache.py"),
    ),
    ("read: statement rows -> objects", ("read_bundle",)),
    ("read: one round trip (asyncpg; a transaction on a cold model state)", ("read_rows",)),
    ("gRPC servicer glue (metadata, response message)", ("GetDecisionProvenance",)),
    ("Kaireon interceptor (identity, roles)", ("platform/auth/",)),
]


async def _owner_value(ctx: Context, sql: str, *args: str) -> int:
    async with ctx.db.owner_connection() as con:
        return int(await con.fetchval(sql, ctx.tenant, *args) or 0)


EMITTED = "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2"
BUNDLE_SIZE = "SELECT avg(length(body))::int FROM provenance_bundle_store WHERE tenant_id = $1"


def _audit_checked(
    ctx: Context, work: Callable[[], Row] | None, *, per_request: int
) -> Callable[[], Row] | None:
    """`work` (an h2load run) with its gRPC errors counted from the audit: h2load
    sees HTTP 200 for a gRPC error too, but every emission served appends one
    audit row first, so a request (per_request emissions) whose rows are missing
    failed. A stream cut off by the window adds rows: more appended is no error."""
    if work is None:
        return None

    def checked() -> Row:
        before = ctx.on_loop(_owner_value(ctx, EMITTED, EMIT_ACTION))
        result = work()
        appended = ctx.on_loop(_owner_value(ctx, EMITTED, EMIT_ACTION)) - before
        sent = result.extra.get("requests", 0) + result.extra.get("warmup_requests", 0)
        missing = max(0, sent * per_request - appended) // per_request
        result.errors = (result.errors or 0) + missing
        total = result.extra.get("requests", 0)
        result.error_rate = result.errors / total if total else None
        result.note = "errors from audit rows appended (h2load cannot read grpc-status)"
        return result

    return checked


def _identity(ctx: Context) -> dict[str, str]:
    return {"x-tenant-id": ctx.tenant, "x-user-role": "admin"}


async def _grpc_h2load(ctx: Context) -> Row:
    row = Row("provenance.grpc.h2load", "provenance read, gRPC", "h2load", baseline="echo.h2load")
    message = provenance_pb2.GetDecisionProvenanceRequest(decision_id="dec_00001_1")
    ctx.check_served(row, "provenance")
    work = ctx.h2_grpc(row, ctx.grpc_port, METHOD, message.SerializeToString(), _identity(ctx))
    out = ctx.dir / "profile-provenance.txt"

    def profiled() -> Row:
        assert work is not None
        with ctx.spying(out, ctx.profile.h2_warmup + ctx.profile.h2_seconds):
            return work()

    row = await ctx.measure(
        row, "server", _audit_checked(ctx, profiled if work else None, per_request=1)
    )
    cpu = cpu_per_request(row)
    head = f"server CPU per bundle {cpu:.3f} ms, split by the shares below" if cpu else ""
    ctx.profiled("provenance gRPC (h2load)", out, PARTS, head)
    return row


async def _stream_once(target: str, tenant: str, decisions: list[str]) -> tuple[int, float]:
    """StreamDecisionProvenance of `decisions`: (bundles received, seconds)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = provenance_pb2_grpc.ProvenanceServiceStub(channel)
        started = time.perf_counter()
        call = stub.StreamDecisionProvenance(
            provenance_pb2.StreamDecisionProvenanceRequest(decision_ids=decisions),
            metadata=metadata(tenant),
        )
        count = sum([1 async for m in call if not m.not_found])
        return count, time.perf_counter() - started


async def _bulk(ctx: Context) -> list[Row]:
    """The bulk stream of 1,000 decisions: their first emissions (built; the
    second pass keeps them), then the kept bytes (goal: >= 5,000 bundles/s), from
    one Python client; then from h2load, several streams at once, beside the
    framework's own ceiling for a stream of messages of a bundle's size."""
    # One decision of each of the first (up to) 1,000 seeded customers.
    decisions = [f"dec_{c:05d}_1" for c in range(1, min(1000, ctx.profile.customers) + 1)]
    rows = []
    for key, what in (("first", "first emissions"), ("kept", "kept bundles")):
        row = Row(
            f"provenance.stream.{key}",
            f"provenance stream, {len(decisions):,} {what}",
            "python grpc.aio",
            offered="1 stream",
            unit="bundles/s",
        )
        if ctx.check_served(row, "provenance").measured and key == "kept":
            # The second emission keeps each bundle.
            await _stream_once(ctx.grpc_target, ctx.tenant, decisions)

        def work(row: Row = row) -> Row:
            count, seconds = asyncio.run(_stream_once(ctx.grpc_target, ctx.tenant, decisions))
            row.rps = count / seconds
            row.extra["bundles"] = count
            row.errors = len(decisions) - count
            return row

        rows.append(await ctx.measure(row, "server", work))
    if rows[-1].measured:
        rows += await _bulk_h2load(ctx, decisions)
    return rows


async def _bulk_h2load(ctx: Context, decisions: list[str]) -> list[Row]:
    """The kept stream from h2load (a C client: one Python client decoding 12 KB
    messages is itself a limit), two streams per worker at once, and the bare
    grpc.aio stream of the same number of messages of a bundle's size."""
    streams = 2 * ctx.workers
    size = await _owner_value(ctx, BUNDLE_SIZE)
    ceiling = Row(
        "echo.stream.h2load",
        f"server stream: bare grpc.aio, {STREAM_COPIES:,} x {size:,} B (framework ceiling)",
        "h2load",
        unit="messages/s",
    )
    payload = wrappers_pb2.BytesValue(value=b"k" * size).SerializeToString()
    work = ctx.h2_grpc(ceiling, ctx.echo_port, ECHO_STREAM, payload, {}, connections=streams)
    ceiling = _per_message(await ctx.measure(ceiling, "echo", work), STREAM_COPIES)
    row = Row(
        "provenance.stream.kept.h2load",
        f"provenance stream, {len(decisions):,} kept bundles",
        "h2load",
        unit="bundles/s",
        baseline="echo.stream.h2load",
    )
    message = provenance_pb2.StreamDecisionProvenanceRequest(decision_ids=decisions)
    work = ctx.h2_grpc(
        row, ctx.grpc_port, STREAM_METHOD, message.SerializeToString(), _identity(ctx), streams
    )
    checked = _audit_checked(ctx, work, per_request=len(decisions))
    return [ceiling, _per_message(await ctx.measure(row, "server", checked), len(decisions))]


def _per_message(row: Row, per_stream: int) -> Row:
    """h2load counts streams: the row in messages (p50/p99 stay per stream)."""
    if row.measured and row.rps is not None:
        row.extra["streams_per_s"] = row.rps
        row.rps *= per_stream
    return row


async def run(ctx: Context) -> list[Row]:
    rest = Row(
        "provenance.rest.h2load",
        "provenance read, REST",
        "h2load",
        baseline="provenance.grpc.h2load",
    )
    url = f"{ctx.base_url}/api/v1/decisions/dec_00001_1/provenance"
    work = ctx.h2(ctx.check_served(rest, "provenance", rest=True), url, _identity(ctx), http1=True)
    rows = [await _grpc_h2load(ctx), await ctx.measure(rest, "server", work)]
    k6_rows = await ctx.both_protocols("provenance", "provenance read")
    return rows + k6_rows + [await _rest_sustained(ctx, k6_rows[-1])] + await _bulk(ctx)


# The REST latency goal is judged at the highest rate the service sustains:
# errors (k6's failed and dropped calls) under 1% of those offered.
SUSTAINED_ERROR_RATE = 0.01
SUSTAINED_STEPS = 3
SUSTAINED_SHARE = 0.8  # of the rate achieved at the step before


async def _rest_sustained(ctx: Context, at_level: Row) -> Row:
    """The REST k6 scenario again, slower, until it sustains its rate: each step
    offers 80% of what the step before achieved (its capacity when it shed
    calls). The level's own run is the answer when it sustained its rate."""
    row = Row(
        "provenance.rest.sustained.k6",
        "provenance read, REST, highest rate sustained (< 1% errors)",
        "k6",
        baseline="provenance.rest.k6",
    )
    last = at_level
    for _ in range(SUSTAINED_STEPS):
        if not last.measured or last.rps is None:
            row.status, row.note = last.status, "no REST k6 run to start from"
            return row
        if last.error_rate is not None and last.error_rate < SUSTAINED_ERROR_RATE:
            break
        rate = max(1, int(last.rps * SUSTAINED_SHARE))
        step = Row(row.key, row.scenario, "k6", baseline=row.baseline)
        last = await ctx.k6(step, "provenance", "rest", rate=rate)
    if last is at_level:
        # Same figures as the level's row; the ratio columns then read 1.00x.
        return dataclasses.replace(
            at_level,
            key=row.key,
            scenario=row.scenario,
            baseline=row.baseline,
            note="the level's rate is sustained: its own run",
            extra=dict(at_level.extra),
        )
    # Each step was made as this row (its key, scenario and baseline).
    if last.error_rate is None or last.error_rate >= SUSTAINED_ERROR_RATE:
        last.note = f"not sustained after {SUSTAINED_STEPS} slower runs"
    return last
