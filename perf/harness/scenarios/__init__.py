"""perf/run's scenario groups, in the order they run (`perf/run --only a,b`).

Each module has `async def run(ctx: Context) -> list[Row]`; ceilings first (the
rows every other row is a ratio to), then the load scenarios, then one operation
at a time on the heavy customers (which erases them), then the in-process runner.
Groups in OPT_IN run only when named in --only (they need what a plain run may
not have, root for the multi-host lab, or ask another question: how fast the
transparency log keeps up with appends, what metrics and tracing cost, how
each RPC's latency grows with the tenant's history).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from harness.report import Row
from harness.run import Context
from harness.scenarios import (
    ceilings,
    dsar,
    erasure,
    flow,
    metrics,
    provenance,
    runner,
    scale,
    scaleout,
    single,
    tlog,
)

Scenario = Callable[[Context], Awaitable[list[Row]]]
# Imported above, not looked up by name: the import graph shows every group.
_IN_ORDER = (ceilings, provenance, erasure, dsar, flow, single, runner)
_OPT_IN = (scaleout, tlog, metrics, scale)
GROUPS: dict[str, Scenario] = {m.__name__.rpartition(".")[2]: m.run for m in _IN_ORDER + _OPT_IN}
OPT_IN = {m.__name__.rpartition(".")[2] for m in _OPT_IN}
