"""Node types for the flow tests (registered through the entry-point mechanism).

`test.step` records each execution (in-process list, a counter file outside
the process, optionally a row written in the checkpoint transaction), can
sleep, and fails on demand, so tests can prove what ran and what was reused.
Its output {"node", "total"} sums its own value and its inputs' totals, so a
downstream output shows whether reloaded inputs were right.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaireon_server.flow.nodes.base import Config, NodeContext, NodeError, NodeSetup, NodeType


@dataclass(frozen=True)
class StepConfig:
    value: float
    sleep: float
    fail_flag: str | None
    fail_attempts: int
    counter_file: str | None
    db_effect: bool
    fail_after_effect: bool
    nan_output: bool


class Step(NodeType[StepConfig]):
    name = "test.step"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> StepConfig:
        cfg = Config(
            config,
            {
                "value",
                "sleep",
                "fail_flag",
                "fail_attempts",
                "counter_file",
                "db_effect",
                "fail_after_effect",
                "label",
                "nan_output",
            },
        )
        return StepConfig(
            value=cfg.number("value", 1),
            sleep=cfg.number("sleep", 0),
            fail_flag=cfg.text("fail_flag", None),
            fail_attempts=cfg.integer("fail_attempts", 0, minimum=0),
            counter_file=cfg.text("counter_file", None),
            db_effect=cfg.flag("db_effect", False),
            fail_after_effect=cfg.flag("fail_after_effect", False),
            nan_output=cfg.flag("nan_output", False),
        )

    async def run(self, ctx: NodeContext, config: StepConfig, inputs: Mapping[str, Any]) -> Any:
        extras = ctx.services.extras
        extras.setdefault("calls", []).append(ctx.node_id)
        extras["active"] = extras.get("active", 0) + 1
        extras["max_active"] = max(extras.get("max_active", 0), extras["active"])
        try:
            if config.counter_file:
                _append(config.counter_file, f"{ctx.run_id} {ctx.node_id}\n")
            if config.sleep:
                await asyncio.sleep(config.sleep)
            if ctx.node_id in extras.get("fail", ()):
                raise NodeError("planned failure", retryable=False)
            if config.fail_flag and _exists(config.fail_flag):
                raise NodeError("planned failure (flag file)")
            if ctx.attempt <= config.fail_attempts:
                raise NodeError("flaky failure", retryable=True)
            if config.db_effect:
                con = await ctx.transaction()
                await con.execute(
                    "INSERT INTO flow_test_effect (tenant_id, run_id, node_id) VALUES ($1, $2, $3)",
                    ctx.tenant_id,
                    ctx.run_id,
                    ctx.node_id,
                )
                if config.fail_after_effect:
                    raise NodeError("failure after the write")
        finally:
            extras["active"] -= 1
        if config.nan_output:
            return {"node": ctx.node_id, "total": float("nan")}
        total = config.value + sum(v["total"] for v in inputs.values())
        return {"node": ctx.node_id, "total": total}


def _append(path: str, line: str) -> None:
    # O_APPEND: concurrent processes appending short lines never interleave.
    with open(path, "a") as fh:
        fh.write(line)


def _exists(path: str) -> bool:
    return os.path.exists(path)


EFFECT_TABLE = """
CREATE TABLE IF NOT EXISTS flow_test_effect (
    tenant_id text NOT NULL,
    run_id    text NOT NULL,
    node_id   text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
)
"""
