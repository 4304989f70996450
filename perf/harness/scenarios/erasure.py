"""Erasure of a fresh customer under load (k6, gRPC then REST): each protocol erases
its own slice of the seed's never-erased pool."""

from __future__ import annotations

from harness.report import Row
from harness.run import Context


async def run(ctx: Context) -> list[Row]:
    return await ctx.both_protocols("erasure", "erasure of a fresh customer")
