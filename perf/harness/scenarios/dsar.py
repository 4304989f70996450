"""DSAR create + watch until completed under load (k6, gRPC then REST)."""

from __future__ import annotations

from harness.report import Row
from harness.run import Context


async def run(ctx: Context) -> list[Row]:
    return await ctx.both_protocols("dsar", "DSAR create + watch to completed")
