"""Statistics over raw per-iteration latencies. Pure Python, so exact values are testable."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.schema.record import Latency, Throughput

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile by linear interpolation between closest ranks.

    The same definition as numpy's default (``method='linear'``): position
    ``(n - 1) * q / 100`` in the sorted values.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], not {q}")
    pos = (len(sorted_values) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    frac = pos - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


def min_samples_for(q: float) -> int:
    """Iterations needed before the q-th percentile is more than the maximum sample.

    With fewer than ``100 / (100 - q)`` samples, p99 is just an interpolation towards the
    largest one; results flag such percentiles as unreliable.
    """
    return math.ceil(100 / (100 - q)) if q < 100 else 1


def latency_summary(latencies_s: Sequence[float]) -> Latency:
    """Mean, percentiles, extremes and spread of latencies given in seconds, reported in ms."""
    if not latencies_s:
        raise ValueError("no latencies to summarise")
    ms = sorted(x * 1000.0 for x in latencies_s)
    n = len(ms)
    mean = statistics.fmean(ms)
    stdev = statistics.stdev(ms) if n > 1 else 0.0
    q1, q3 = percentile(ms, 25), percentile(ms, 75)
    return Latency(
        count=n,
        mean_ms=mean,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        min_ms=ms[0],
        max_ms=ms[-1],
        stdev_ms=stdev,
        iqr_ms=q3 - q1,
        cv=stdev / mean if mean > 0 else None,
        unreliable_percentiles=[f"p{q}" for q in PERCENTILES if n < min_samples_for(q)],
    )


def throughput(samples: int, iterations: int, window_s: float) -> Throughput:
    """Samples and iterations per second over the wall time of the measured window."""
    if window_s <= 0:
        raise ValueError("the measured window must last a positive time")
    return Throughput(samples_per_s=samples / window_s, iters_per_s=iterations / window_s)
