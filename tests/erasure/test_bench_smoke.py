"""perf/erasure_bench.py stays runnable (tiny sizes; its speed goal is not asserted here)."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.support.server import ROOT


async def test_the_benchmark_runs_and_prints_its_table(database_url: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIREON_")}
    env["DATABASE_URL"] = database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "perf" / "erasure_bench.py"),
        "--rows",
        "1000",
        "--rounds",
        "2",
        "--background-customers",
        "5",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = out.decode().splitlines()
    assert lines[0].startswith("erasure benchmark: 1000 rows of one customer over 11 tables")
    assert lines[2].startswith("raw SQL DELETE") and lines[2].split()[-1] == "2"
    assert lines[3].startswith("EraseCustomer (gRPC)") and lines[3].split()[-1] == "2"
    assert lines[-1].startswith("ratio (median)") and "goal <= 1.50 x" in lines[-1]
