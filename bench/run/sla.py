"""The highest server load a system sustains under a latency bound: a bracketing search over
LoadGen server runs, each a whole run (its own worker and record).

From a starting QPS the load doubles until a run is INVALID (or halves until one is VALID),
then the bracket [highest valid, lowest invalid] is bisected until it is narrower than the
tolerance. Every point tried is kept with LoadGen's verdict and percentiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run.record import RunRecord
from bench.run.spec import RunSpec, SpecError
from bench.run.store import write_json_atomic

#: Relative width of the final bracket: (lowest invalid - highest valid) / lowest invalid.
DEFAULT_TOLERANCE = 0.05
DEFAULT_MAX_POINTS = 20
#: Below this the search gives up looking for a valid load.
MIN_QPS = 0.01


@dataclass(frozen=True)
class SlaPoint:
    target_qps: float
    valid: bool
    #: Why LoadGen called the run invalid, or the run's error.
    reason: str | None
    completed_qps: float | None
    latency_ms: dict[str, float | None]
    run_id: str


@dataclass
class SlaResult:
    spec: dict[str, Any]
    latency_bound_ms: float
    latency_percentile: float
    tolerance: float
    #: The highest target QPS whose run was VALID (None: not even the lowest tried).
    best_qps: float | None = None
    #: The lowest target QPS whose run was INVALID (None: the search never found one).
    lowest_invalid_qps: float | None = None
    converged: bool = False
    points: list[SlaPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SlaError(RuntimeError):
    """A point failed for a reason other than its latency (a crash, an error)."""


def search(
    spec: RunSpec,
    run_point: Callable[[RunSpec], RunRecord],
    *,
    start_qps: float,
    tolerance: float = DEFAULT_TOLERANCE,
    max_points: int = DEFAULT_MAX_POINTS,
    on_point: Callable[[SlaPoint], None] | None = None,
) -> SlaResult:
    """Find the highest server QPS whose LoadGen run of ``spec`` is VALID."""
    if spec.scenario != "server" or spec.latency_bound_ms is None:
        raise SpecError("the SLA search runs the server scenario with a latency bound")
    if not start_qps > 0:
        raise SpecError("the starting QPS must be positive")
    if not 0 < tolerance < 1:
        raise SpecError("the tolerance must be in (0, 1)")
    result = SlaResult(
        spec=spec.to_dict(),
        latency_bound_ms=spec.latency_bound_ms,
        latency_percentile=spec.latency_percentile,
        tolerance=tolerance,
    )
    qps = start_qps
    while len(result.points) < max_points:
        point = measure_point(run_point(spec.replace(target_qps=qps)), qps)
        result.points.append(point)
        if on_point is not None:
            on_point(point)
        if point.valid:
            result.best_qps = max(result.best_qps or 0.0, qps)
        else:
            low = result.lowest_invalid_qps
            result.lowest_invalid_qps = qps if low is None else min(low, qps)
        lo, hi = result.best_qps, result.lowest_invalid_qps
        if hi is None:
            qps *= 2
        elif lo is None:
            qps /= 2
            if qps < MIN_QPS:
                break
        elif (hi - lo) / hi <= tolerance:
            result.converged = True
            break
        else:
            qps = _round((lo + hi) / 2)
    return result


def measure_point(record: RunRecord, qps: float) -> SlaPoint:
    """A server run as a point of the search; errors other than LoadGen's verdict raise."""
    if not record.ok:
        raise SlaError(
            f"the run at {qps:g} QPS ended {record.outcome.status}: {record.outcome.message}"
        )
    res = record.scenario.result if record.scenario is not None else None
    if not res or "valid" not in res:
        raise SlaError(f"the run at {qps:g} QPS has no LoadGen result")
    percentiles = res.get("latency_ms") or {}
    reasons = res.get("invalid_reasons") or []
    return SlaPoint(
        target_qps=qps,
        valid=bool(res["valid"]),
        reason="; ".join(map(str, reasons)) or None,
        completed_qps=res.get("completed_samples_per_s"),
        latency_ms={k: percentiles.get(k) for k in ("p50", "p90", "p99")},
        run_id=record.run_id,
    )


def _round(qps: float) -> float:
    """Three significant figures: target loads that read well and repeat exactly."""
    return float(f"{qps:.3g}")


def write_result(result: SlaResult, out_dir: Path) -> Path:
    """The search's summary beside its runs (named so it is not mistaken for a run)."""
    spec = result.spec
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = (
        f"{spec['workload']}_{spec['backend']}_{spec['precision']}_"
        f"{str(spec['device']).replace(':', '')}_p{result.latency_percentile:g}-"
        f"{result.latency_bound_ms:g}ms"
    )
    return write_json_atomic(result.to_dict(), out_dir / f"sla-{stamp}-{label}.json")


def render(result: SlaResult) -> str:
    """The points tried, in the order tried, and the answer."""
    from tabulate import tabulate

    rows = [
        [
            f"{p.target_qps:g}",
            "VALID" if p.valid else "INVALID",
            _ms(p.latency_ms.get("p50")),
            _ms(p.latency_ms.get("p99")),
            f"{p.completed_qps:.4g}" if p.completed_qps is not None else "",
            p.reason or "",
        ]
        for p in result.points
    ]
    headers = ["target QPS", "LoadGen", "p50 ms", "p99 ms", "completed QPS", "why invalid"]
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    bound = f"p{result.latency_percentile:g} <= {result.latency_bound_ms:g} ms"
    if result.best_qps is None:
        answer = f"no load tried was VALID at {bound}"
    else:
        answer = f"highest VALID load at {bound}: {result.best_qps:g} QPS"
        if result.lowest_invalid_qps is not None:
            answer += f" (INVALID at {result.lowest_invalid_qps:g})"
    if not result.converged:
        answer += "; the search did not converge within its points"
    return f"{table}\n{answer}"


def _ms(value: float | None) -> str:
    return f"{value:.3g}" if value is not None else ""
