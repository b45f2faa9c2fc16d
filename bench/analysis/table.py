"""Result records as a plain-text table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from bench.run import registry
from bench.run.record import RunRecord
from bench.telemetry.validity import FLAG_CODES, MFU_MAX, short_codes

HEADERS = (
    "workload",
    "backend",
    "mode",
    "prec",
    "batch",
    "shape",
    "device",
    "outcome",
    "samples/s",
    "p50 ms",
    "p99 ms",
    "CV %",
    "TFLOP/s",
    "MFU %",
    "util %",
    "W",
    "J/sample",
    "flags",
)


def row(record: RunRecord) -> list[Any]:
    spec = record.spec
    tput, lat, tele = record.throughput, record.latency, record.telemetry
    unreliable = set(lat.unreliable_percentiles) if lat is not None else set()
    p99 = _num(lat.p99_ms if lat else None, 2)
    cv = lat.cv if lat else None
    mfu = tput.mfu.mfu if tput is not None and tput.mfu is not None else None
    if mfu is not None and mfu > MFU_MAX:
        mfu = None  # impossible: not shown, flagged (mfu) instead
    return [
        spec.workload,
        spec.backend_label,
        spec.mode,
        spec.precision,
        spec.batch,
        registry.workload_info(spec.workload).shape_text(spec, "column"),
        record.device_name,
        record.outcome.status,
        _num(tput.samples_per_s if tput else None, 2),
        _num(lat.p50_ms if lat else None, 2),
        f"{p99}*" if p99 != "" and "p99" in unreliable else p99,
        _num(cv * 100 if cv is not None else None, 1),
        _num(tput.tflops_per_s if tput else None, 3),
        _num(_pct(mfu), 1),
        _num(tele.utilization_pct, 0),
        _num(tele.power_mean_w, 0),
        _num(tele.energy_per_sample_j, 3),
        short_codes(record),
    ]


def render(records: Iterable[RunRecord], fmt: str = "github") -> str:
    records = list(records)
    text = tabulate([row(r) for r in records], headers=HEADERS, tablefmt=fmt, disable_numparse=True)
    notes = []
    if any(r.latency is not None and "p99" in r.latency.unreliable_percentiles for r in records):
        notes.append("* p99 from fewer than 100 iterations: an interpolation, not a tail estimate")
    if any(short_codes(r) for r in records):
        legend = ", ".join(f"{short}={code}" for code, short in FLAG_CODES.items())
        notes.append(f"flags: {legend} (details in each result's validity section)")
        notes.append("util %: GPU utilization, or host CPU utilization on CPU runs")
    for r in records:
        if not r.ok:
            notes.append(f"{r.run_id}: {r.outcome.status}: {r.outcome.message}")
    return "\n".join([text, *notes])


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def _num(value: float | None, digits: int) -> str:
    """Fixed decimals, or three significant figures for values under 1 (the null workload's
    microsecond latencies would otherwise print as 0.00)."""
    if value is None:
        return ""
    if value != 0 and abs(value) < 1:
        return f"{value:.3g}"
    return f"{value:,.{digits}f}"
