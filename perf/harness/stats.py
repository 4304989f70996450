"""Latency percentiles, computed the same way for every generator's raw samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds; None when there was nothing to measure."""

    p50: float | None
    p95: float | None
    p99: float | None


def percentiles(samples: Sequence[float]) -> LatencyStats:
    if not samples:
        return LatencyStats(None, None, None)
    ordered = sorted(samples)
    # Nearest rank, the ceil(q * n)-th smallest: a value that was actually observed.
    p50, p95, p99 = (ordered[math.ceil(q * len(ordered)) - 1] for q in (0.50, 0.95, 0.99))
    return LatencyStats(p50, p95, p99)
