"""The machine's ceilings, measured in the same run as the service: a bare grpc.aio
echo (framework), one indexed SELECT through asyncpg (database), the server's
health.Check (framework + Kaireon's interceptor, no database), and the echo under k6."""

from __future__ import annotations

from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2

from harness.report import Row
from harness.run import Context


async def run(ctx: Context) -> list[Row]:
    echo_msg = wrappers_pb2.BytesValue(value=b"k" * 64).SerializeToString()
    lookup_msg = wrappers_pb2.StringValue(value="dec_00001_1").SerializeToString()
    health_msg = health_pb2.HealthCheckRequest().SerializeToString()
    echo_title = "echo: bare grpc.aio (framework ceiling)"
    rows = []
    for key, title, group, port, method, message in (
        ("echo", echo_title, "echo", ctx.echo_port, "kaireon.perf.v1.Echo/Echo", echo_msg),
        (
            "lookup",
            "lookup: 1 indexed SELECT via asyncpg (database ceiling)",
            "echo",
            ctx.echo_port,
            "kaireon.perf.v1.Echo/Lookup",
            lookup_msg,
        ),
        (
            "health",
            "health.Check of the server (framework + interceptor, no database)",
            "server",
            ctx.grpc_port,
            "grpc.health.v1.Health/Check",
            health_msg,
        ),
    ):
        base = None if key == "echo" else "echo.h2load"
        row = Row(f"{key}.h2load", title, "h2load", baseline=base)
        rows.append(await ctx.measure(row, group, ctx.h2_grpc(row, port, method, message, {})))
    k6_echo = Row("echo.k6", echo_title, "k6", baseline="echo.h2load")
    echo = f"127.0.0.1:{ctx.echo_port}"
    return [*rows, await ctx.k6(k6_echo, "echo", "grpc", target=echo, group="echo")]
