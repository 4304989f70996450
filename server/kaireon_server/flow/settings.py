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

from kaireon_server.platform.errors import ConfigurationError


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name) or ""
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or ""
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ConfigurationError(f"{name} must be > 0, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


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
        max_runs = _int(env, "KAIREON_FLOW_MAX_RUNS", 16)
        return cls(
            max_concurrency=_int(env, "KAIREON_FLOW_MAX_CONCURRENCY", 8),
            max_runs=max_runs,
            tenant_max_runs=_int(env, "KAIREON_FLOW_TENANT_MAX_RUNS", max(1, max_runs // 2)),
            retry_after_seconds=_float(env, "KAIREON_RETRY_AFTER_SECONDS", 1.0),
            max_nodes=_int(env, "KAIREON_FLOW_MAX_NODES", 5000),
            node_timeout_seconds=_float(env, "KAIREON_FLOW_NODE_TIMEOUT_SECONDS", 300.0),
            sql_max_rows=_int(env, "KAIREON_FLOW_SQL_MAX_ROWS", 100_000),
            sql_timeout_ms=_int(env, "KAIREON_FLOW_SQL_TIMEOUT_MS", 10_000),
            sweep_seconds=_float(env, "KAIREON_FLOW_SWEEP_SECONDS", 15.0),
            checkpoint_sync_commit=_bool(env, "KAIREON_FLOW_CHECKPOINT_SYNC_COMMIT"),
            checkpoint_retention_hours=float(
                _int(env, "KAIREON_FLOW_CHECKPOINT_RETENTION_HOURS", 168, minimum=0)
            ),
        )
