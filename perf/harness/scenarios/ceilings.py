"""The machine's ceilings, measured in the same run as the service: a bare grpc.aio
echo (framework), one indexed SELECT through asyncpg (database), the server's
health.Check (framework + Kaireon's interceptor, no database), and the echo under k6."""

from __future__ import annotations

from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2

from harness.report import Row
from harness.run import Context

TITLES = {
    "echo": "echo: bare grpc.aio (framework ceiling)",
    "lookup": "lookup: 1 indexed SELECT via asyncpg (database ceiling)",
    "health": "health.Check of the server (framework + interceptor, no database)",
}
# The echo server's calls, then the server's own (health.Check).
CALLS = (
    ("echo", "kaireon.perf.v1.Echo/Echo", wrappers_pb2.BytesValue(value=b"k" * 64)),
    ("lookup", "kaireon.perf.v1.Echo/Lookup", wrappers_pb2.StringValue(value="dec_00001_1")),
    ("health", "grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest()),
)


async def run(ctx: Context) -> list[Row]:
    rows = []
    for key, method, message in CALLS:
        group, port = ("server", ctx.grpc_port) if key == "health" else ("echo", ctx.echo_port)
        base = None if key == "echo" else "echo.h2load"
        row = Row(f"{key}.h2load", TITLES[key], "h2load", baseline=base)
        work = ctx.h2_grpc(row, port, method, message.SerializeToString(), {})
        rows.append(await ctx.measure(row, group, work))
    k6_echo = Row("echo.k6", TITLES["echo"], "k6", baseline="echo.h2load")
    echo = f"127.0.0.1:{ctx.echo_port}"
    return [*rows, await ctx.k6(k6_echo, "echo", "grpc", target=echo, group="echo")]
