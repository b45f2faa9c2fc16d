"""Bring runs from many machines together: price them, group them by what they measured,
rank them by cost-performance, compare them with baseline runs, and gate on regressions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis import cost
from bench.analysis.prices import InstancePrice, lookup, price_for_run
from bench.analysis.table import device_name
from bench.run.store import load_record, result_files

#: What makes two runs measure the same work. Backend, precision and hardware are what a
#: comparison varies, so they are not part of it.
WORK_FIELDS = ("workload", "mode", "batch", "include_h2d", "scenario")
#: A regression gate compares like with like: the same work on the same path and hardware.
GATE_FIELDS = (*WORK_FIELDS, "backend", "precision")

#: --fail-on metric names: (where in the row, True when higher is better).
GATE_METRICS = {
    "throughput": ("samples_per_s", True),
    "p50": ("p50_ms", False),
    "p99": ("p99_ms", False),
    "mean": ("mean_ms", False),
    "cost": ("usd_per_million", False),
    "energy": ("energy_per_sample_j", False),
}
_THRESHOLD_RE = re.compile(r"^([a-z0-9]+):([+-]\d+(?:\.\d+)?)%$")


class CompareError(ValueError):
    """Bad input to compare (a threshold, a baseline); the CLI exits 2."""


@dataclass(frozen=True)
class Threshold:
    metric: str
    percent: float

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """``throughput:-5%`` (fail when 5 % lower) or ``p99:+10%`` (fail when 10 % higher)."""
        m = _THRESHOLD_RE.match(text.strip())
        if not m or m.group(1) not in GATE_METRICS:
            raise CompareError(
                f"bad --fail-on {text!r}: use METRIC:+N% or METRIC:-N% with METRIC one of "
                f"{', '.join(GATE_METRICS)}"
            )
        metric, percent = m.group(1), float(m.group(2))
        higher_is_better = GATE_METRICS[metric][1]
        if (percent < 0) != higher_is_better or percent == 0:
            direction = "-N% (a drop)" if higher_is_better else "+N% (a rise)"
            raise CompareError(f"--fail-on {text}: {metric} regresses by a {direction}")
        return cls(metric, percent)

    def violated(self, ratio: float) -> bool:
        limit = 1 + self.percent / 100
        return ratio < limit if self.percent < 0 else ratio > limit


@dataclass
class Pricing:
    catalogue: dict[str, InstancePrice]
    local: InstancePrice | None = None  # --price-per-hour, for runs with no instance type
    #: --instance, for runs that recorded none: hardware name (or "*") -> instance type
    instances: dict[str, str] = field(default_factory=dict)
    basis: str = "instance"  # or "used": the share of a multi-GPU instance a run used

    def price(self, record: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The run's price facts, or None and why not."""
        recorded = ((record.get("environment") or {}).get("instance") or {}).get("instance_type")
        instance_type = recorded or self.instances.get(device_name(record), self.instances.get("*"))
        entry = lookup(self.catalogue, instance_type) if instance_type else None
        if instance_type and entry is None:
            return None, f"instance type {instance_type} is not in the price catalogue"
        entry = entry or self.local
        if entry is None:
            return None, "no instance type recorded and no --price-per-hour given"
        used = max(cost.gpus_used(record), 1)
        return price_for_run(entry, min(used, entry.gpu_count)), ""

    def hourly(self, price: dict[str, Any] | None) -> float | None:
        if price is None:
            return None
        key = "price_per_hour_usd" if self.basis == "instance" else "price_per_hour_used_usd"
        return price[key]


@dataclass
class Row:
    record: dict[str, Any]
    path: Path
    values: dict[str, Any]
    baseline: Row | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        return self.record["spec"]


def load_runs(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, load_record(p)) for p in result_files(paths)]


def work_key(spec: dict[str, Any], fields: Sequence[str] = WORK_FIELDS) -> tuple[Any, ...]:
    shape = spec["image_size"] if spec["workload"] == "ssd" else spec["seq_len"]
    return (*(spec.get(f) for f in fields), shape if spec["workload"] != "null" else None)


def make_row(path: Path, record: dict[str, Any], pricing: Pricing) -> Row:
    spec = record["spec"]
    tput = record.get("throughput") or {}
    lat = record.get("latency") or {}
    tele = record.get("telemetry") or {}
    price, why = pricing.price(record)
    hourly = pricing.hourly(price)
    costs = cost.cost_metrics(
        tput.get("samples_per_s"),
        hourly,
        workload=spec["workload"],
        mode=spec["mode"],
        energy_per_sample_j=tele.get("energy_per_sample_j"),
    )
    return Row(
        record=record,
        path=path,
        values={
            "instance": (price or {}).get("instance_type"),
            "hardware": device_name(record),
            "samples_per_s": tput.get("samples_per_s"),
            "p50_ms": lat.get("p50_ms"),
            "p99_ms": lat.get("p99_ms"),
            "mean_ms": lat.get("mean_ms"),
            "util_pct": tele.get("util_gpu_mean_pct"),
            "energy_per_sample_j": tele.get("energy_per_sample_j"),
            "price_per_hour_usd": hourly,
            "price": price,
            "unpriced_reason": why or None,
            "usd_per_million": costs["usd_per_million_samples"],
            "samples_per_usd": costs["samples_per_usd"],
            "usd_per_epoch": costs["usd_per_epoch"],
            "hours_per_epoch": costs["hours_per_epoch"],
        },
    )


@dataclass
class Comparison:
    groups: dict[tuple[Any, ...], list[Row]]
    failed_runs: list[Row]
    unmatched: list[str]
    regressions: list[str]
    gated: int
    basis: str


def compare(
    runs: Sequence[tuple[Path, dict[str, Any]]],
    pricing: Pricing,
    baselines: Sequence[tuple[Path, dict[str, Any]]] = (),
    thresholds: Sequence[Threshold] = (),
) -> Comparison:
    """Rows grouped by the work they measured, each sorted by cost-performance, with
    ratios against their baseline and the regressions ``thresholds`` find."""
    rows = [make_row(p, r, pricing) for p, r in runs]
    ok = [r for r in rows if r.record["outcome"]["status"] == "ok"]
    failed = [r for r in rows if r.record["outcome"]["status"] != "ok"]
    base_rows = [make_row(p, r, pricing) for p, r in baselines]
    base_rows = [b for b in base_rows if b.record["outcome"]["status"] == "ok"]
    base_ids = {b.record["run_id"] for b in base_rows}
    unmatched: list[str] = []
    regressions: list[str] = []
    gated = 0
    used_baselines: set[str] = set()
    for row in ok:
        if row.record["run_id"] in base_ids:
            continue
        match, exact = _find_baseline(row, base_rows)
        if match is None:
            if base_rows:
                unmatched.append(f"{_label(row)}: no baseline run measured the same work")
            continue
        used_baselines.add(match.record["run_id"])
        row.baseline = match
        row.ratios = {
            m: _ratio(row.values[k], match.values[k]) for m, (k, _) in GATE_METRICS.items()
        }
        if not thresholds:
            continue
        if not exact:
            unmatched.append(
                f"{_label(row)}: baseline {match.record['run_id']} differs in backend, "
                "precision or hardware; not gated"
            )
            continue
        gated += 1
        for t in thresholds:
            ratio = row.ratios.get(t.metric)
            if ratio is not None and t.violated(ratio):
                regressions.append(
                    f"{_label(row)}: {t.metric} {ratio - 1:+.1%} against "
                    f"{match.record['run_id']} (limit {t.percent:+g}%)"
                )
    for b in base_rows:
        if b.record["run_id"] not in used_baselines:
            unmatched.append(f"baseline {_label(b)}: no run to compare with it")
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in ok + [
        b for b in base_rows if b.record["run_id"] not in {r.record["run_id"] for r in ok}
    ]:
        groups.setdefault(work_key(row.spec), []).append(row)
    for members in groups.values():
        members.sort(key=_rank)
    return Comparison(groups, failed, unmatched, regressions, gated, pricing.basis)


def _find_baseline(row: Row, bases: Sequence[Row]) -> tuple[Row | None, bool]:
    """The same work on the same path and hardware; else the only run of the same work."""
    key = work_key(row.spec, GATE_FIELDS)
    exact = [
        b
        for b in bases
        if work_key(b.spec, GATE_FIELDS) == key and b.values["hardware"] == row.values["hardware"]
    ]
    if exact:
        return exact[-1], True
    same_work = [b for b in bases if work_key(b.spec) == work_key(row.spec)]
    return (same_work[0], False) if len(same_work) == 1 else (None, False)


def _rank(row: Row) -> tuple[int, float]:
    """Cheapest per million samples first; unpriced runs after, fastest first."""
    usd = row.values["usd_per_million"]
    if usd is not None:
        return 0, usd
    return 1, -(row.values["samples_per_s"] or 0.0)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base in (None, 0):
        return None
    return value / base


def _label(row: Row) -> str:
    s = row.spec
    where = row.values["instance"] or row.values["hardware"]
    return f"{s['workload']} {s['mode']} {s['backend']} {s['precision']} b{s['batch']} on {where}"


def group_title(key: tuple[Any, ...]) -> str:
    workload, mode, batch, h2d, scenario, shape = key
    shape_text = {"ssd": f"{shape}x{shape}", "bert": f"seq {shape}"}.get(workload, "")
    extra = ", host-to-device copy timed" if h2d else ""
    return f"{workload} {mode}, batch {batch} {shape_text}{extra}".strip()


COLUMNS = (
    "",
    "instance",
    "hardware",
    "backend",
    "prec",
    "samples/s",
    "p50 ms",
    "p99 ms",
    "util %",
    "J/sample",
    "$/h",
    "$/1M samples",
    "$/epoch",
    "thr vs base",
    "p99 vs base",
)


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    best = next((r for r in rows if r.values["usd_per_million"] is not None), None)
    out = []
    for r in rows:
        v, s = r.values, r.spec
        out.append(
            [
                "best"
                if r is best
                else ("base" if r.baseline is None and _is_base(r, rows) else ""),
                v["instance"] or "-",
                v["hardware"],
                s["backend"],
                s["precision"],
                _fmt(v["samples_per_s"], 2),
                _fmt(v["p50_ms"], 2),
                _fmt(v["p99_ms"], 2),
                _fmt(v["util_pct"], 0),
                _fmt(v["energy_per_sample_j"], 3),
                _fmt(v["price_per_hour_usd"], 3),
                _fmt(v["usd_per_million"], 2),
                _fmt(v["usd_per_epoch"], 2),
                _fmt_ratio(r.ratios.get("throughput")),
                _fmt_ratio(r.ratios.get("p99")),
            ]
        )
    return out


def _is_base(row: Row, rows: Sequence[Row]) -> bool:
    return any(r.baseline is row for r in rows)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if 0 < abs(value) < 1 and digits >= 2 else f"{value:,.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(c: Comparison, fmt: str = "github") -> str:
    from tabulate import tabulate

    basis = (
        "whole instance" if c.basis == "instance" else "share of the instance's GPUs the run used"
    )
    parts = [
        f"Prices: on-demand per hour, {basis}. Sorted by $ per million samples; "
        "best = cheapest per sample."
    ]
    for key, rows in c.groups.items():
        parts.append(f"\n### {group_title(key)}\n")
        parts.append(
            tabulate(table_rows(rows), headers=COLUMNS, tablefmt=fmt, disable_numparse=True)
        )
    unpriced = sorted(
        {
            r.values["unpriced_reason"]
            for rows in c.groups.values()
            for r in rows
            if r.values["unpriced_reason"]
        }
    )
    if unpriced:
        parts.append("\nNot priced: " + "; ".join(unpriced))
    if c.failed_runs:
        parts.append("\nRuns that did not finish (not compared):")
        parts += [
            f"- {_label(r)}: {r.record['outcome']['status']}: {r.record['outcome'].get('message')}"
            for r in c.failed_runs
        ]
    if c.unmatched:
        parts.append("\nNot compared (spec mismatch):")
        parts += [f"- {line}" for line in c.unmatched]
    return "\n".join(parts)
