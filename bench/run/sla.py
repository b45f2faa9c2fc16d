"""The highest server load a system sustains under a latency bound: a bracketing search over
LoadGen server runs, each a whole run (its own worker and record).

From a starting QPS (estimated by a probe) the load doubles until a run is INVALID (or
halves until one is VALID, never below a load whose run ends in bounded time), then the
bracket [highest VALID, lowest INVALID] is bisected until it is narrower than the tolerance
or the next load would round to an end. One verdict can be noise, so both ends are then
confirmed by running them again (2 of 2, or the best 2 of 3); a VALID load above an INVALID
one is re-tested, never concluded from. Every run is kept with LoadGen's verdict.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run.loadgen import early_stopping_min_queries
from bench.run.loadgen_log import from_scenario_result
from bench.run.store import write_json_atomic
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec, SpecError

#: Relative width of the final bracket: (lowest invalid - highest valid) / lowest invalid.
DEFAULT_TOLERANCE = 0.05
#: Narrower brackets than this are noise on a shared machine (and below the rounding).
MIN_TOLERANCE = 0.01
DEFAULT_MAX_POINTS = 24
#: No point is tried whose run would last longer than this (LoadGen's minimum query count
#: over the load): the search stops with "no valid load above X QPS" instead.
DEFAULT_MAX_POINT_S = 120.0
#: Significant figures of the loads tried.
DIGITS = 3


@dataclass(frozen=True)
class SlaPoint:
    target_qps: float
    valid: bool
    #: Why LoadGen called the run invalid.
    reason: str | None
    completed_qps: float | None
    scheduled_qps: float | None
    #: LoadGen's latency at the bound's percentile.
    latency_ms: float | None
    run_id: str
    #: A re-run of a load tried before (a confirmation).
    retest: bool = False


@dataclass
class SlaResult:
    spec: dict[str, Any]
    latency_bound_ms: float
    latency_percentile: float
    tolerance: float
    start_qps: float
    #: The lowest load tried: runs below it would last longer than allowed.
    floor_qps: float
    #: The highest load confirmed VALID (None: none was).
    best_qps: float | None = None
    #: The lowest load confirmed INVALID (None: none was found).
    lowest_invalid_qps: float | None = None
    #: (lowest invalid - highest valid) / lowest invalid, once both are confirmed.
    bracket_width: float | None = None
    #: LoadGen's scheduled samples per second at the confirmed best load (its last run).
    scheduled_qps_at_best: float | None = None
    #: Both ends of the bracket are confirmed.
    converged: bool = False
    stop_reason: str = ""
    points: list[SlaPoint] = field(default_factory=list)

    @property
    def found_bracket(self) -> bool:
        return self.best_qps is not None and self.lowest_invalid_qps is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SlaError(RuntimeError):
    """A point failed for a reason other than its latency (a crash, an error)."""


#: The probe's loop: full batches, after a short warm-up.
PROBE_ITERS = 5
#: The search starts at this share of the probed capacity (max batch / batch latency).
START_SHARE = 0.5


#: An endpoint has no loop to probe: a short offline test through it measures its capacity.
PROBE_OFFLINE_S = 2.0


def probe_spec(spec: RunSpec) -> RunSpec:
    """A short loop of full batches, whose latency estimates the SUT's capacity; against an
    endpoint, a short offline test (LoadGen's samples per second)."""
    if spec.endpoint is not None:
        return spec.replace(
            scenario="offline", duration_s=PROBE_OFFLINE_S, iters=None, target_qps=None
        )
    return spec.replace(
        scenario="loop",
        batch=spec.effective_max_batch,
        iters=PROBE_ITERS,
        duration_s=None,
        warmup=1,
        target_qps=None,
    )


def probe_capacity(record: RunRecord) -> float:
    """Samples per second the probe sustained: full batches back to back, or LoadGen's
    offline samples per second for an endpoint."""
    if not record.ok:
        raise SlaError(f"the probe run failed: {record.outcome.message}")
    if record.spec.scenario == "offline":
        if not record.samples_per_s:
            raise SlaError("the probe measured no samples per second")
        return record.samples_per_s
    if record.latency is None or record.latency.p50_ms <= 0:
        raise SlaError(f"the probe run failed: {record.outcome.message}")
    return record.spec.batch / (record.latency.p50_ms / 1000)


def start_from_probe(record: RunRecord) -> float:
    """The first load of the search: half the capacity the probe measured."""
    return round_qps(probe_capacity(record) * START_SHARE)


def floor_qps(spec: RunSpec, max_point_s: float) -> float:
    """The lowest load whose server run ends within ``max_point_s``: LoadGen needs its
    minimum query count (early stopping's, at the bound's percentile) at any load."""
    return round_qps(min_queries(spec) / max_point_s, up=True)


def min_queries(spec: RunSpec) -> int:
    """The queries a server run issues at least: early stopping's minimum at the bound's
    percentile, or the spec's minimum query count."""
    return max(spec.iters or 1, early_stopping_min_queries(spec.latency_percentile))


def point_seconds(spec: RunSpec, qps: float) -> float:
    """How long LoadGen's server run at ``qps`` lasts at least."""
    return max(spec.duration_s or 0.0, min_queries(spec) / qps)


def search(
    spec: RunSpec,
    run_point: Callable[[RunSpec], RunRecord],
    *,
    start_qps: float,
    tolerance: float = DEFAULT_TOLERANCE,
    max_points: int = DEFAULT_MAX_POINTS,
    max_point_s: float = DEFAULT_MAX_POINT_S,
    max_time_s: float | None = None,
    on_point: Callable[[SlaPoint], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SlaResult:
    """Find the highest server QPS whose LoadGen run of ``spec`` is VALID, confirmed."""
    if spec.scenario != "server" or spec.latency_bound_ms is None:
        raise SpecError("the SLA search runs the server scenario with a latency bound")
    if not start_qps > 0:
        raise SpecError("the starting QPS must be positive")
    if not 0 < tolerance < 1:
        raise SpecError("the tolerance must be in (0, 1)")
    if max_points < 2:
        raise SpecError("the search needs at least 2 points (--max-points 2 or more)")
    floor = floor_qps(spec, max_point_s)
    result = SlaResult(
        spec=spec.to_dict(),
        latency_bound_ms=spec.latency_bound_ms,
        latency_percentile=spec.latency_percentile,
        tolerance=max(tolerance, MIN_TOLERANCE),
        start_qps=round_qps(max(start_qps, floor)),
        floor_qps=floor,
    )
    votes: dict[float, list[bool]] = {}
    started = clock()

    def run(qps: float) -> None:
        record = run_point(spec.replace(target_qps=qps))
        point = measure_point(record, qps, retest=qps in votes)
        votes.setdefault(qps, []).append(point.valid)
        result.points.append(point)
        if on_point is not None:
            on_point(point)

    qps: float | None = result.start_qps
    while qps is not None:
        if len(result.points) >= max_points:
            result.stop_reason = f"stopped after --max-points {max_points} runs"
            break
        spent = clock() - started
        if max_time_s is not None and spent + point_seconds(spec, qps) > max_time_s:
            result.stop_reason = f"stopped: the next run would pass --max-time {max_time_s:g} s"
            break
        run(qps)
        qps, result.stop_reason = _next_load(votes, result.tolerance, floor)
    _conclude(result, votes)
    return result


def _verdict(votes: list[bool]) -> bool | None:
    """The majority of a load's runs; None while they are tied."""
    yes, no = votes.count(True), votes.count(False)
    return None if yes == no else yes > no


def _confirmed(votes: list[bool]) -> bool:
    return max(votes.count(True), votes.count(False)) >= 2


def _next_load(
    votes: dict[float, list[bool]], tolerance: float, floor: float
) -> tuple[float | None, str]:
    """The next load to run (None: done) and, when done, why."""
    tied = sorted(q for q, v in votes.items() if _verdict(v) is None)
    if tied:  # a 1-1 split: the third run decides
        return tied[0], ""
    valid = sorted(q for q, v in votes.items() if _verdict(v))
    invalid = sorted(q for q, v in votes.items() if _verdict(v) is False)
    if invalid and valid and valid[-1] > invalid[0]:
        # not monotone: confirm the points out of order, starting with the lowest INVALID
        for q in (invalid[0], valid[-1]):
            if not _confirmed(votes[q]):
                return q, ""
        # both confirmed and still out of order: trust the lower INVALID one
    lo = max((q for q in valid if not invalid or q < invalid[0]), default=None)
    hi = min((q for q in invalid if lo is None or q > lo), default=None)
    if hi is None:
        assert lo is not None
        return round_qps(lo * 2), ""
    if lo is None:
        if hi <= floor:
            return None, f"no valid load above {_plain(floor)} QPS (the lowest load tried)"
        return max(floor, round_qps(hi / 2)), ""
    mid = round_qps((lo + hi) / 2)
    if (hi - lo) / hi > tolerance and mid not in (lo, hi) and mid not in votes:
        return mid, ""
    for q in (lo, hi):  # narrow enough: confirm both ends
        if not _confirmed(votes[q]):
            return q, ""
    return None, f"bracket confirmed, {(hi - lo) / hi:.1%} wide"


def _conclude(result: SlaResult, votes: dict[float, list[bool]]) -> None:
    valid = sorted(q for q, v in votes.items() if _verdict(v) and _confirmed(v))
    invalid = sorted(q for q, v in votes.items() if _verdict(v) is False and _confirmed(v))
    lo = max((q for q in valid if not invalid or q < invalid[0]), default=None)
    hi = min((q for q in invalid if lo is None or q > lo), default=None)
    result.best_qps, result.lowest_invalid_qps = lo, hi
    if lo is not None and hi is not None:
        result.bracket_width = (hi - lo) / hi
        result.converged = result.bracket_width <= result.tolerance or round_qps((lo + hi) / 2) in (
            lo,
            hi,
        )
    if lo is not None:
        last = [p for p in result.points if p.target_qps == lo and p.valid][-1]
        result.scheduled_qps_at_best = last.scheduled_qps


def measure_point(record: RunRecord, qps: float, *, retest: bool = False) -> SlaPoint:
    """A server run as a point of the search; errors other than LoadGen's verdict raise."""
    if not record.ok:
        raise SlaError(
            f"the run at {_plain(qps)} QPS ended {record.outcome.status}: {record.outcome.message}"
        )
    facts = record.scenario
    lg = from_scenario_result(facts.result if facts is not None else None)
    if lg is None:
        raise SlaError(f"the run at {_plain(qps)} QPS has no LoadGen result")
    return SlaPoint(
        target_qps=qps,
        valid=lg.valid,
        reason="; ".join(lg.invalid_reasons) or None,
        completed_qps=lg.completed_samples_per_s,
        scheduled_qps=lg.scheduled_samples_per_s,
        latency_ms=lg.target_latency_ms,
        run_id=record.run_id,
        retest=retest,
    )


def round_qps(qps: float, *, up: bool = False) -> float:
    """Three significant figures: target loads that read well and repeat exactly."""
    if qps <= 0:
        return qps
    scale = 10 ** (math.floor(math.log10(qps)) - DIGITS + 1)
    steps = math.ceil(qps / scale - 1e-9) if up else round(qps / scale)
    return float(f"{steps * scale:.{DIGITS}g}")


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


#: Width of the reasons column; longer reasons wrap.
REASON_WIDTH = 60


def render(result: SlaResult) -> str:
    """The runs, in the order run, and the answer."""
    from tabulate import tabulate

    pct = f"p{result.latency_percentile:g} ms"
    rows = [
        [
            _plain(p.target_qps) + (" (re-test)" if p.retest else ""),
            "VALID" if p.valid else "INVALID",
            _plain(p.latency_ms),
            _plain(p.scheduled_qps),
            _plain(p.completed_qps),
            textwrap.fill(p.reason or "", REASON_WIDTH),
        ]
        for p in result.points
    ]
    headers = ["target QPS", "LoadGen", pct, "scheduled QPS", "completed QPS", "why invalid"]
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    return f"{table}\n{answer(result)}"


def answer(result: SlaResult) -> str:
    bound = f"p{result.latency_percentile:g} <= {result.latency_bound_ms:g} ms"
    if result.best_qps is None:
        text = f"no load was confirmed VALID at {bound}"
    else:
        text = f"highest VALID load at {bound}: {_plain(result.best_qps)} QPS (confirmed"
        if result.scheduled_qps_at_best is not None:
            text += f"; LoadGen scheduled {_plain(result.scheduled_qps_at_best)} samples/s"
        text += ")"
        if result.lowest_invalid_qps is not None and result.bracket_width is not None:
            text += (
                f"; INVALID at {_plain(result.lowest_invalid_qps)} QPS: "
                f"bracket {result.bracket_width:.1%} wide"
            )
    return f"{text}\n{result.stop_reason}" if result.stop_reason else text


def _plain(value: float | None) -> str:
    """A plain number (no scientific notation)."""
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 0.01 else f"{value:.4f}"
