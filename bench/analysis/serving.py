"""Cost at a latency target: from LoadGen server runs, the highest load each instance and
path sustained with its latency percentile under the bound, and what a million inferences
cost there, beside the offline (throughput) cost of the same work."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.analysis.cost import cost_metrics, loadgen_invalid
from bench.run import registry
from bench.run.loadgen_log import from_scenario_result

if TYPE_CHECKING:
    from bench.analysis.rows import Row

#: (workload, input size, latency bound ms, percentile)
ServingKey = tuple[str, int | None, float, float]


@dataclass
class ServingRow:
    """One instance and path at one latency bound."""

    instance: str | None
    hardware: str
    backend: str
    precision: str
    #: The highest target QPS whose LoadGen server run was VALID (None: none was).
    best_qps: float | None
    #: LoadGen's percentile latency at that load.
    latency_at_best_ms: float | None
    points: int
    price_per_hour_usd: float | None
    usd_per_million_at_bound: float | None
    offline_samples_per_s: float | None = None
    offline_usd_per_million: float | None = None
    #: (target QPS, percentile latency ms, valid) of every server run, by load.
    curve: list[tuple[float, float | None, bool]] = field(default_factory=list)
    #: False where a VALID load lies above an INVALID one (a noisy verdict: re-test).
    monotone: bool = True


def usd_per_million(price_per_hour: float | None, per_s: float | None) -> float | None:
    return cost_metrics(per_s, price_per_hour).usd_per_million_samples


def serving_groups(rows: Sequence[Row]) -> dict[ServingKey, list[ServingRow]]:
    """Server runs grouped by work and latency bound, one row per instance and path, sorted
    by $ per million inferences at the bound (rows with no valid load last). Only runs
    LoadGen judged VALID count: the best load is the highest VALID one below every INVALID
    one, and the offline figure is the best VALID offline run's."""
    servers: dict[tuple[ServingKey, tuple[Any, ...]], list[Row]] = {}
    offline: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        spec = row.spec
        if not row.record.ok:
            continue
        shape = registry.workload_info(spec.workload).shape_value(spec)
        backend = f"{spec.backend} (served)" if spec.endpoint is not None else spec.backend
        path = (row.instance, row.hardware, backend, spec.precision, spec.workload, shape)
        if spec.scenario == "server" and spec.latency_bound_ms is not None:
            key = (spec.workload, shape, spec.latency_bound_ms, spec.latency_percentile)
            servers.setdefault((key, path), []).append(row)
        elif spec.scenario == "offline" and not loadgen_invalid(row.record):
            offline.setdefault(path, []).append(row)
    groups: dict[ServingKey, list[ServingRow]] = {}
    for (key, path), runs in servers.items():
        curve = sorted(_point(r) for r in runs)
        best, monotone = best_valid_load(curve)
        price = runs[0].price_per_hour_usd
        off_best = max((r.record.samples_per_s or 0.0 for r in offline.get(path, [])), default=0)
        off = off_best or None
        groups.setdefault(key, []).append(
            ServingRow(
                instance=path[0],
                hardware=path[1],
                backend=path[2],
                precision=path[3],
                best_qps=best[0] if best else None,
                latency_at_best_ms=best[1] if best else None,
                points=len(runs),
                price_per_hour_usd=price,
                usd_per_million_at_bound=usd_per_million(price, best[0] if best else None),
                offline_samples_per_s=off,
                offline_usd_per_million=usd_per_million(price, off),
                curve=curve,
                monotone=monotone,
            )
        )
    for members in groups.values():
        members.sort(key=_rank)
    return groups


def best_valid_load(
    curve: Sequence[tuple[float, float | None, bool]],
) -> tuple[tuple[float, float | None, bool] | None, bool]:
    """The highest VALID point below the lowest INVALID one, and whether the curve is
    monotone (no VALID point above an INVALID one: else a verdict was noise, and the
    points above the first INVALID one are not trusted)."""
    lowest_invalid = min((q for q, _, valid in curve if not valid), default=math.inf)
    below = [p for p in curve if p[2] and p[0] < lowest_invalid]
    monotone = not any(p[2] and p[0] > lowest_invalid for p in curve)
    return (max(below, key=lambda p: p[0]) if below else None), monotone


def _point(row: Row) -> tuple[float, float | None, bool]:
    """(target QPS, LoadGen's latency at the bound's percentile, LoadGen's verdict)."""
    facts = row.record.scenario
    result = from_scenario_result(facts.result if facts is not None else None)
    latency = result.target_latency_ms if result is not None else None
    valid = result.valid if result is not None else row.record.loadgen_valid is True
    return float(row.spec.target_qps or 0.0), latency, valid


def _rank(row: ServingRow) -> tuple[int, float]:
    if row.usd_per_million_at_bound is not None:
        return 0, row.usd_per_million_at_bound
    return 1, -(row.best_qps or 0.0)


def title(key: ServingKey) -> str:
    workload, shape, bound, percentile = key
    shape_text = registry.workload_info(workload).format_shape(shape, "title")
    return f"{workload} {shape_text}: $ per 1M inferences at p{percentile:g} <= {bound:g} ms"


COLUMNS = (
    "",
    "instance",
    "hardware",
    "backend",
    "prec",
    "max QPS at bound",
    "latency ms",
    "runs",
    "$/h",
    "$/1M at bound",
    "offline samples/s",
    "$/1M offline",
)


def table_rows(rows: Sequence[ServingRow]) -> list[list[str]]:
    best = next((r for r in rows if r.usd_per_million_at_bound is not None), None)
    return [
        [
            "best" if r is best else "",
            r.instance or "-",
            r.hardware,
            r.backend,
            r.precision,
            _fmt(r.best_qps, "none valid") + ("" if r.monotone else " (non-monotone)"),
            _fmt(r.latency_at_best_ms),
            str(r.points),
            _fmt(r.price_per_hour_usd),
            _fmt(r.usd_per_million_at_bound),
            _fmt(r.offline_samples_per_s),
            _fmt(r.offline_usd_per_million),
        ]
        for r in rows
    ]


def summary_lines(groups: dict[ServingKey, list[ServingRow]]) -> list[str]:
    """Per workload and bound: the cheapest instance at the bound, and by how much."""
    lines = []
    for key, rows in groups.items():
        priced = [r for r in rows if r.usd_per_million_at_bound is not None]
        if not priced:
            lines.append(f"{title(key)}: no priced run was valid at the bound")
            continue
        first = priced[0]
        where = f"{first.instance or first.hardware} ({first.backend}, {first.precision})"
        line = (
            f"{title(key)}: cheapest is {where} at ${first.usd_per_million_at_bound:.3g} "
            f"({first.best_qps:g} QPS)"
        )
        if len(priced) > 1:
            second = priced[1]
            assert second.usd_per_million_at_bound is not None
            ratio = second.usd_per_million_at_bound / (first.usd_per_million_at_bound or 1.0)
            line += (
                f", {ratio:.2f}x cheaper than the next, "
                f"{second.instance or second.hardware} ({second.backend}, {second.precision})"
            )
        lines.append(line)
    return lines


def _fmt(value: float | None, missing: str = "-") -> str:
    """Plain numbers (no scientific notation): three significant figures below 1000."""
    if value is None:
        return missing
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.6f}"
