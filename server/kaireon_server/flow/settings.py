"""The flow runner's knobs, read from the server environment (Settings.env).

- KAIREON_FLOW_MAX_CONCURRENCY (8): most nodes of one run executing at once;
  a definition may ask for fewer.
- KAIREON_FLOW_MAX_RUNS (16): most runs one server process executes at once;
  beyond it StartRun/RetryRun answer RESOURCE_EXHAUSTED.
- KAIREON_FLOW_TENANT_MAX_RUNS (half of KAIREON_FLOW_MAX_RUNS, at least 1):
  most runs of one tenant a process executes at once, so one tenant cannot
  take every slot; beyond it RESOURCE_EXHAUSTED `FLOW_TENANT_RUNS_EXHAUSTED`.
- KAIREON_FLOW_MAX_NODES (5000): most nodes in one definition.
- KAIREON_FLOW_NODE_TIMEOUT_SECONDS (300): default and upper bound of a node
  attempt's timeout.
- KAIREON_FLOW_SQL_MAX_ROWS (100000) / KAIREON_FLOW_SQL_TIMEOUT_MS (10000):
  default and upper bound of `source.sql` max_rows / timeout_ms.
- KAIREON_FLOW_SWEEP_SECONDS (15): how often runs left RUNNING by a dead
  process are marked FAILED.
- KAIREON_FLOW_CHECKPOINT_RETENTION_HOURS (168): checkpoints of runs finished
  longer ago are deleted by the sweep (outputs may hold personal data);
  0 keeps them until ClearCheckpoints.
- KAIREON_FLOW_CHECKPOINT_SYNC_COMMIT (false): wait for the disk on every
  checkpoint commit (see PostgresCheckpointStore for the trade-off).
- KAIREON_FLOW_MASK_KEY (unset): HMAC key of `transform.mask` mode "hash";
  that mode is refused without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kaireon_server.platform.admission import retry_after_from_env
from kaireon_server.platform.env import EnvReader


@dataclass(frozen=True)
class FlowLimits:
    max_concurrency: int = 8
    max_runs: int = 16
    max_nodes: int = 5000
    node_timeout_seconds: float = 300.0
    sql_max_rows: int = 100_000
    sql_timeout_ms: int = 10_000
    sweep_seconds: float = 15.0
    checkpoint_sync_commit: bool = False
    checkpoint_retention_hours: float = 168.0
    tenant_max_runs: int = 8
    # The retry hint (RetryInfo / Retry-After) of a refused start.
    retry_after_seconds: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FlowLimits:
        read = EnvReader(env)

        def count(name: str, default: int) -> int:
            return read.integer(name, default, minimum=1)

        def seconds(name: str, default: float) -> float:
            return read.number(name, default, exclusive_minimum=0)

        max_runs = count("KAIREON_FLOW_MAX_RUNS", 16)
        return cls(
            max_concurrency=count("KAIREON_FLOW_MAX_CONCURRENCY", 8),
            max_runs=max_runs,
            tenant_max_runs=count("KAIREON_FLOW_TENANT_MAX_RUNS", max(1, max_runs // 2)),
            retry_after_seconds=retry_after_from_env(env),
            max_nodes=count("KAIREON_FLOW_MAX_NODES", 5000),
            node_timeout_seconds=seconds("KAIREON_FLOW_NODE_TIMEOUT_SECONDS", 300.0),
            sql_max_rows=count("KAIREON_FLOW_SQL_MAX_ROWS", 100_000),
            sql_timeout_ms=count("KAIREON_FLOW_SQL_TIMEOUT_MS", 10_000),
            sweep_seconds=seconds("KAIREON_FLOW_SWEEP_SECONDS", 15.0),
            checkpoint_sync_commit=read.boolean("KAIREON_FLOW_CHECKPOINT_SYNC_COMMIT", False),
            checkpoint_retention_hours=float(
                read.integer("KAIREON_FLOW_CHECKPOINT_RETENTION_HOURS", 168, minimum=0)
            ),
        )
