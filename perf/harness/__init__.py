"""The load-test harness behind `perf/run` (see perf/README.md).

It seeds PostgreSQL at a stated size, starts the server as production runs it
(KAIREON_WORKERS processes), measures the machine's ceilings in the same run
(bare grpc.aio echo, one asyncpg lookup, raw SQL DELETE / COPY) and runs the
k6 scenarios and h2load probes, then prints one table with every figure as a
ratio to those ceilings.
"""
