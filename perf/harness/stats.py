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


def _rank(ordered: Sequence[float], q: float) -> float:
    # Nearest-rank percentile: a value that was actually observed.
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def percentiles(samples: Sequence[float]) -> LatencyStats:
    if not samples:
        return LatencyStats(None, None, None)
    ordered = sorted(samples)
    return LatencyStats(_rank(ordered, 0.50), _rank(ordered, 0.95), _rank(ordered, 0.99))
