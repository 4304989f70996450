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
    echo = Row("echo.h2load", "echo: bare grpc.aio (framework ceiling)", "h2load")
    lookup = Row(
        "lookup.h2load",
        "lookup: 1 indexed SELECT via asyncpg (database ceiling)",
        "h2load",
        baseline="echo.h2load",
    )
    health = Row(
        "health.h2load",
        "health.Check of the server (framework + interceptor, no database)",
        "h2load",
        baseline="echo.h2load",
    )
    k6_echo = Row(
        "echo.k6",
        "echo: bare grpc.aio (framework ceiling)",
        "k6",
        offered=ctx.offered(1.0),
        baseline="echo.h2load",
    )
    return [
        await ctx.measure(
            echo,
            "echo",
            ctx.h2_grpc(echo, ctx.echo_port, "kaireon.perf.v1.Echo/Echo", echo_msg, {}),
        ),
        await ctx.measure(
            lookup,
            "echo",
            ctx.h2_grpc(lookup, ctx.echo_port, "kaireon.perf.v1.Echo/Lookup", lookup_msg, {}),
        ),
        await ctx.measure(
            health,
            "server",
            ctx.h2_grpc(
                health,
                ctx.stack.grpc_port,
                "grpc.health.v1.Health/Check",
                health_pb2.HealthCheckRequest().SerializeToString(),
                {},
            ),
        ),
        await ctx.k6(k6_echo, "echo.js", {"ECHO_TARGET": f"127.0.0.1:{ctx.echo_port}"}, "echo"),
    ]
