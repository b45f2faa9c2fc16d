"""Result records as a plain-text table."""

from __future__ import annotations

import re
from collections.abc import Iterable
from textwrap import fill
from typing import Any

from tabulate import tabulate

from bench.analysis.units import plain
from bench.run import registry
from bench.run.validity import FLAG_CODES, MFU_MAX, short_codes
from bench.schema.record import RunRecord

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


#: The default (narrow) table: what a buyer reads first; ``--wide`` shows ``HEADERS``.
NARROW_HEADERS = ("work", "path", "device", "samples/s", "p50 ms", "p99 ms", "flags")
#: Marks a latency a finished run has none of; the footnote says why.
GAP_MARK = "\u2020"


def latency_gap(record: RunRecord) -> str | None:
    """Why a finished run has no per-step latency; None where it has one, or did not finish."""
    if record.latency is not None or not record.ok:
        return None
    spec = record.spec
    if spec.timing == "pipelined" and record.execution.step_timer is None:
        return (
            f"{spec.backend} runs its operators asynchronously and has no per-step device "
            "timer, so pipelined timing measures only the window (throughput); "
            "--timing synchronized times every step"
        )
    return None


def _latency(record: RunRecord, value: float | None, digits: int = 2) -> str:
    if value is None and latency_gap(record) is not None:
        return f"n/a{GAP_MARK}"
    return _num(value, digits)


def short_device(name: str) -> str:
    """A device name without trademark marks and filler words: ``Intel Xeon (2 cores)``."""
    name = re.sub(r"\((R|TM|tm|r)\)", "", name)
    name = re.sub(r"\b(Processor|CPU)\b", "", name)
    return " ".join(name.split())


def narrow_row(record: RunRecord) -> list[str]:
    """``NARROW_HEADERS`` of a run; an outcome other than ok is shown in place of figures."""
    spec = record.spec
    tput, lat = record.throughput, record.latency
    shape = registry.workload_info(spec.workload).shape_text(spec, "column")
    work = f"{spec.workload} {spec.mode} b{spec.batch} {shape}".strip()
    if spec.scenario != "loop":
        work += f" {spec.scenario}"
    mode = spec.execution_label
    return [
        work,
        f"{spec.backend} {spec.precision}" + (f" ({mode})" if mode else ""),
        short_device(record.device_name),
        plain(tput.samples_per_s if tput else None, "") if record.ok else record.outcome.status,
        _latency(record, lat.p50_ms if lat else None, 1),
        _p99(record, 1),
        short_codes(record),
    ]


def _p99(record: RunRecord, digits: int = 2) -> str:
    lat = record.latency
    p99 = _latency(record, lat.p99_ms if lat else None, digits)
    unreliable = lat is not None and "p99" in lat.unreliable_percentiles
    return f"{p99}*" if p99 != "" and unreliable else p99


def row(record: RunRecord) -> list[Any]:
    """``HEADERS`` of a run (the wide table)."""
    spec = record.spec
    tput, lat, tele = record.throughput, record.latency, record.telemetry
    p99 = _p99(record)
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
        _latency(record, lat.p50_ms if lat else None),
        p99,
        _num(cv * 100 if cv is not None else None, 1),
        _num(tput.tflops_per_s if tput else None, 3),
        _num(_pct(mfu), 1),
        _num(tele.utilization_pct, 0),
        _num(tele.power_mean_w, 0),
        _num(tele.energy_per_sample_j, 3),
        short_codes(record),
    ]


def render(records: Iterable[RunRecord], fmt: str = "github", wide: bool = False) -> str:
    """The runs as a table: the narrow one by default, every column with ``wide``."""
    records = list(records)
    body = [row(r) if wide else narrow_row(r) for r in records]
    headers = HEADERS if wide else NARROW_HEADERS
    text = tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)
    notes = []
    gaps = dict.fromkeys(g for r in records if (g := latency_gap(r)) is not None)
    notes += [
        f"{GAP_MARK} n/a: {gap}" if wide else fill(f"{GAP_MARK} n/a: {gap}", 120) for gap in gaps
    ]
    if any(r.latency is not None and "p99" in r.latency.unreliable_percentiles for r in records):
        notes.append("* p99 from fewer than 100 iterations: an interpolation, not a tail estimate")
    if any(short_codes(r) for r in records):
        legend = ", ".join(f"{short}={code}" for code, short in FLAG_CODES.items())
        line = f"flags: {legend} (details in each result's validity section)"
        notes.append(line if wide else fill(line, 120))
        if wide:
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
