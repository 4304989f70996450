"""The ceiling servers: a bare grpc.aio server with no Kaireon code in it.

    python -m harness.echo_server --port P [--workers N] [--dsn DSN --tenant T]

Echo returns its request (the framework ceiling), Lookup runs one indexed
SELECT through an asyncpg pool sized like the server's (the database ceiling),
Stream sends its request back STREAM_COPIES times (the ceiling of a server
stream). N processes share the port with SO_REUSEPORT, as the server's workers
do. The interface is declared in perf/k6/proto/echo.proto for k6 and ghz.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health, health_pb2_grpc

from kaireon_server.platform import event_loop

SERVICE = "kaireon.perf.v1.Echo"
# Messages per Stream call: as many as StreamDecisionProvenance's longest list.
STREAM_COPIES = 1000

LOOKUP_SQL = (
    "SELECT row_to_json(t)::text FROM decision_trace t WHERE t.tenant_id = $1 AND t.id = $2"
)


async def serve(port: int, dsn: str | None, tenant: str, pool_max: int) -> None:
    pool: Any = None
    if dsn:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=pool_max)

    async def echo(request: wrappers_pb2.BytesValue, context: Any) -> wrappers_pb2.BytesValue:
        return request

    async def stream(
        request: wrappers_pb2.BytesValue, context: Any
    ) -> AsyncIterator[wrappers_pb2.BytesValue]:
        for _ in range(STREAM_COPIES):
            yield request

    async def lookup(request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.BytesValue:
        if pool is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no database")
        async with pool.acquire() as con:
            row = await con.fetchval(LOOKUP_SQL, tenant, request.value)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such decision")
        return wrappers_pb2.BytesValue(value=row.encode())

    def handler(kind: Any, method: Any, request: Any) -> grpc.RpcMethodHandler:
        serialize = wrappers_pb2.BytesValue.SerializeToString
        return kind(method, request_deserializer=request.FromString, response_serializer=serialize)

    handlers = {
        "Echo": handler(grpc.unary_unary_rpc_method_handler, echo, wrappers_pb2.BytesValue),
        "Lookup": handler(grpc.unary_unary_rpc_method_handler, lookup, wrappers_pb2.StringValue),
        "Stream": handler(grpc.unary_stream_rpc_method_handler, stream, wrappers_pb2.BytesValue),
    }
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    # SERVING once started: what harness/stack.py waits for, as for the server.
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"echo serving on 127.0.0.1:{port} pid {os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    if pool is not None:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--tenant", default="perf")
    parser.add_argument("--pool-max", type=int, default=10)
    args = parser.parse_args()
    if args.workers <= 1:
        # On the loop the server runs on (KAIREON_EVENT_LOOP), so ratios compare like with like.
        event_loop.run(
            serve(args.port, args.dsn, args.tenant, args.pool_max), event_loop.configured()
        )
        return 0
    # N children on one port (SO_REUSEPORT), as KAIREON_WORKERS does for the server:
    # the same arguments, the last --workers (1) the one that counts.
    child = [sys.executable, "-m", "harness.echo_server", *sys.argv[1:], "--workers", "1"]
    children = [subprocess.Popen(child) for _ in range(args.workers)]

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            child.send_signal(signal.SIGTERM)  # nothing if it has exited

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return 0 if all(c in (0, -signal.SIGTERM) for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
