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

import importlib
from collections.abc import Awaitable, Callable

from harness.report import Row
from harness.run import Context

Scenario = Callable[[Context], Awaitable[list[Row]]]
ORDER = ("ceilings", "provenance", "erasure", "dsar", "flow", "single", "runner")
OPT_IN = ("scaleout", "tlog", "metrics", "scale")
GROUPS: dict[str, Scenario] = {
    name: importlib.import_module(f"harness.scenarios.{name}").run for name in ORDER + OPT_IN
}
