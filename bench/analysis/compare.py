"""Bring runs from many machines together: price them, group them by what they measured,
rank them by cost-performance, compare them with baseline runs, and gate on regressions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import fill
from typing import Any

from bench.analysis.cost import loadgen_invalid, run_cost
from bench.analysis.pricing import Pricing, RunPrice, basis_text
from bench.analysis.rows import Row
from bench.analysis.scaling import (
    SCALING_COLUMNS,
    SCALING_NOTE,
    ScalingKey,
    ScalingPoint,
    scaling_groups,
    scaling_rows,
    scaling_title,
)
from bench.analysis.serving import COLUMNS as SERVING_COLUMNS
from bench.analysis.serving import ServingKey, ServingRow, serving_groups
from bench.analysis.serving import summary_lines as serving_summary_lines
from bench.analysis.serving import table_rows as serving_table_rows
from bench.analysis.serving import title as serving_title
from bench.analysis.table import GAP_MARK, latency_gap
from bench.analysis.units import plain
from bench.run import registry
from bench.schema.record import RunRecord
from bench.schema.spec import ACCURACY_SCENARIOS, RunSpec

#: What makes two runs measure the same work. Backend, precision and hardware are what a
#: comparison varies, so they are not part of it.
WORK_FIELDS = ("workload", "mode", "batch", "include_h2d", "scenario")
#: A regression gate compares like with like: the same work on the same path, execution mode
#: and hardware.
GATE_FIELDS = (*WORK_FIELDS, "backend", "precision", "compile", "cuda_graphs", "timing", "gpus")

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


WorkKey = tuple[Any, ...]


def work_key(spec: RunSpec, fields: Sequence[str] = WORK_FIELDS) -> WorkKey:
    """What a run measured: ``fields`` of its spec and its input size."""
    shape = registry.workload_info(spec.workload).shape_value(spec)
    return (*(getattr(spec, f) for f in fields), shape)


def make_row(path: Path, record: RunRecord, pricing: Pricing) -> Row:
    lat, tele = record.latency, record.telemetry
    price, why = pricing.price(record)
    hourly = price.charged_usd if price is not None else None
    costs = run_cost(record, hourly)
    return Row(
        record=record,
        path=path,
        instance=price.instance_type if price else None,
        hardware=record.device_name,
        samples_per_s=record.samples_per_s,
        p50_ms=lat.p50_ms if lat else None,
        p99_ms=lat.p99_ms if lat else None,
        mean_ms=lat.mean_ms if lat else None,
        util_pct=tele.util_gpu_mean_pct,
        energy_per_sample_j=tele.energy_per_sample_j,
        price_per_hour_usd=hourly,
        price=price,
        unpriced_reason=why or None,
        usd_per_million=costs.usd_per_million_samples,
        samples_per_usd=costs.samples_per_usd,
        usd_per_epoch=costs.usd_per_epoch,
        hours_per_epoch=costs.hours_per_epoch,
    )


@dataclass
class Comparison:
    """Rows grouped by the work they measured, with what could not be compared."""

    groups: dict[WorkKey, list[Row]]
    failed_runs: list[Row]
    unmatched: list[str]
    regressions: list[str]
    gated: int
    basis: str
    #: LoadGen server runs: the highest valid load per instance and path at each bound.
    serving: dict[ServingKey, list[ServingRow]] = field(default_factory=dict)
    #: Work measured on several rank counts: throughput, efficiency and cost by GPUs.
    scaling: dict[ScalingKey, list[ScalingPoint]] = field(default_factory=dict)


def compare(
    runs: Sequence[tuple[Path, RunRecord]],
    pricing: Pricing,
    baselines: Sequence[tuple[Path, RunRecord]] = (),
    thresholds: Sequence[Threshold] = (),
) -> Comparison:
    """Rows grouped by the work they measured, each sorted by cost-performance, with
    ratios against their baseline and the regressions ``thresholds`` find."""
    rows = [make_row(p, r, pricing) for p, r in runs]
    ok = [r for r in rows if r.record.ok]
    failed = [r for r in rows if not r.record.ok]
    base_rows = [make_row(p, r, pricing) for p, r in baselines]
    base_rows = [b for b in base_rows if b.record.ok]
    base_ids = {b.run_id for b in base_rows}
    unmatched: list[str] = []
    regressions: list[str] = []
    gated = 0
    used_baselines: set[str] = set()
    for row in ok:
        if row.run_id in base_ids:
            continue
        match, exact = _find_baseline(row, base_rows)
        if match is None:
            if base_rows:
                unmatched.append(f"{_label(row)}: no baseline run measured the same work")
            continue
        used_baselines.add(match.run_id)
        row.baseline = match
        row.ratios = {
            m: _ratio(row.metric(k), match.metric(k)) for m, (k, _) in GATE_METRICS.items()
        }
        if not thresholds:
            continue
        if not exact:
            unmatched.append(
                f"{_label(row)}: baseline {match.run_id} differs in backend, "
                "precision or hardware; not gated"
            )
            continue
        gated += 1
        for t in thresholds:
            ratio = row.ratios.get(t.metric)
            if ratio is not None and t.violated(ratio):
                regressions.append(
                    f"{_label(row)}: {t.metric} {ratio - 1:+.1%} against "
                    f"{match.run_id} (limit {t.percent:+g}%)"
                )
    for b in base_rows:
        if b.run_id not in used_baselines:
            unmatched.append(f"baseline {_label(b)}: no run to compare with it")
    groups: dict[WorkKey, list[Row]] = {}
    for row in ok + [b for b in base_rows if b.run_id not in {r.run_id for r in ok}]:
        groups.setdefault(work_key(row.spec), []).append(row)
    for members in groups.values():
        members.sort(key=_rank)
    every = [row for members in groups.values() for row in members]
    return Comparison(
        groups,
        failed,
        unmatched,
        regressions,
        gated,
        pricing.basis,
        serving_groups(every),
        scaling_groups(every),
    )


def _find_baseline(row: Row, bases: Sequence[Row]) -> tuple[Row | None, bool]:
    """The same work on the same path and hardware; else the only run of the same work."""
    key = work_key(row.spec, GATE_FIELDS)
    exact = [
        b for b in bases if work_key(b.spec, GATE_FIELDS) == key and b.hardware == row.hardware
    ]
    if exact:
        return exact[-1], True
    same_work = [b for b in bases if work_key(b.spec) == work_key(row.spec)]
    return (same_work[0], False) if len(same_work) == 1 else (None, False)


def _rank(row: Row) -> tuple[int, float]:
    """Cheapest per million samples first; unpriced runs after, fastest first."""
    usd = row.usd_per_million
    if usd is not None:
        return 0, usd
    return 1, -(row.samples_per_s or 0.0)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base in (None, 0):
        return None
    return value / base


def _label(row: Row) -> str:
    s = row.spec
    where = row.instance or row.hardware
    return f"{s.workload} {s.mode} {s.backend_label} {s.precision} b{s.batch} on {where}"


def group_title(key: WorkKey) -> str:
    workload, mode, batch, h2d, scenario, shape = key
    shape_text = registry.workload_info(workload).format_shape(shape, "title")
    extra = ", host-to-device copy timed" if h2d else ""
    if scenario in ACCURACY_SCENARIOS:
        extra += f", {scenario}"
    elif scenario != "loop":
        extra += f", LoadGen {scenario}"
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
    "charged",
    "$/1M samples",
    "$/epoch",
    "thr vs base",
    "p99 vs base",
)


#: The default (narrow) table: the columns a buyer needs; ``--wide`` shows ``COLUMNS``.
#: Columns after ``samples/s`` that no row of a group has a figure for are left out.
NARROW_COLUMNS = (
    "",
    "instance",
    "path",
    "samples/s",
    "p99 ms",
    "$/h (share)",
    "$/1M",
    "$/epoch",
    "thr, p99 vs base",
)
_ALWAYS_SHOWN = 4
#: The serving table's columns in the narrow output (by name; ``--wide`` shows them all).
NARROW_SERVING_COLUMNS = frozenset(
    ("", "instance", "backend", "prec", "max QPS at bound", "latency ms", "$/1M at bound")
    + ("$/1M offline",)
)
#: Prose above and below the narrow tables is wrapped to this width.
NARROW_WIDTH = 120


def _marker(r: Row, rows: Sequence[Row], best: Row | None) -> str:
    if r is best:
        return "best"
    if loadgen_invalid(r.record):
        return "INVALID"
    return "base" if r.baseline is None and _is_base(r, rows) else ""


def narrow_table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the narrow table (about 120 characters wide)."""
    best = next((r for r in rows if r.usd_per_million is not None), None)
    out = []
    for r in rows:
        s = r.spec
        price = (
            f"{_fmt(r.price_per_hour_usd, 3)} ({_share(r.price)})"
            if r.price_per_hour_usd is not None and r.price is not None
            else "-"
        )
        out.append(
            [
                _marker(r, rows, best),
                r.instance or r.hardware,
                path_label(s),
                plain(r.samples_per_s),
                _latency(r, r.p99_ms),
                price,
                _fmt(r.usd_per_million, 2),
                _fmt(r.usd_per_epoch, 2),
                _vs_base(r),
            ]
        )
    keep = [
        i
        for i in range(len(NARROW_COLUMNS))
        if i < _ALWAYS_SHOWN or any(row[i] != "-" for row in out)
    ]
    return [NARROW_COLUMNS[i] for i in keep], [[row[i] for i in keep] for row in out]


def path_label(spec: RunSpec) -> str:
    """Backend, precision and the execution mode where it is not the default: ``torch bf16
    (compile)``."""
    mode = spec.execution_label
    return f"{spec.backend} {spec.precision}" + (f" ({mode})" if mode else "")


def _vs_base(r: Row) -> str:
    thr, p99 = r.ratios.get("throughput"), r.ratios.get("p99")
    if thr is None and p99 is None:
        return "-"
    return f"{_fmt_ratio(thr)}, {_fmt_ratio(p99)}"


def _share(price: RunPrice) -> str:
    """``1/8`` of an instance's GPUs, or ``whole``."""
    return "whole" if price.charged_as.startswith("whole") else price.charged_as.split()[0]


def _latency(r: Row, value: float | None) -> str:
    """A latency figure, or why a finished run has none (marked, explained below)."""
    if value is None and latency_gap(r.record) is not None:
        return f"n/a{GAP_MARK}"
    return _fmt(value, 2)


def latency_notes(records: Sequence[RunRecord]) -> list[str]:
    """The footnote for latencies marked absent, once per reason."""
    gaps = dict.fromkeys(g for r in records if (g := latency_gap(r)) is not None)
    return [f"{GAP_MARK} n/a: {gap}" for gap in gaps]


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    """Rows of the wide table (``COLUMNS``)."""
    best = next((r for r in rows if r.usd_per_million is not None), None)
    out = []
    for r in rows:
        s = r.spec
        out.append(
            [
                _marker(r, rows, best),
                r.instance or "-",
                r.hardware,
                s.backend_label,
                s.precision,
                _fmt(r.samples_per_s, 2),
                _latency(r, r.p50_ms),
                _latency(r, r.p99_ms),
                _fmt(r.util_pct, 0),
                _fmt(r.energy_per_sample_j, 3),
                _fmt(r.price_per_hour_usd, 3),
                r.price.charged_as if r.price is not None else "-",
                _fmt(r.usd_per_million, 2),
                _fmt(r.usd_per_epoch, 2),
                _fmt_ratio(r.ratios.get("throughput")),
                _fmt_ratio(r.ratios.get("p99")),
            ]
        )
    return out


#: One-off costs shown under a group, in this order (``bench.schema.record.Execution``).
ONE_OFF_NAMES = {
    "compile_s": "compile",
    "capture_s": "graph capture",
    "engine_build_s": "engine build",
    "first_step_s": "first step",
}


def one_off_lines(rows: Sequence[Row]) -> list[str]:
    """What compiled, graph-captured or engine-built runs paid once before their window;
    nothing for groups of eager runs only."""
    lines = []
    for r in rows:
        costs = r.record.execution.one_off_s
        if not any(costs.get(k) for k in ("compile_s", "capture_s", "engine_build_s")):
            continue
        parts = [f"{name} {costs[k]:.1f} s" for k, name in ONE_OFF_NAMES.items() if k in costs]
        lines.append(f"- one-off, {_label(r)}: {', '.join(parts)}")
    return ["", *lines] if lines else []


def accuracy_lines(rows: Sequence[Row]) -> list[str]:
    """Evaluation and time-to-accuracy runs: the metric, and the time and dollars a training
    run took to reach its target (its hourly price x the time to the target)."""
    lines = []
    for r in rows:
        result = r.record.scenario.result if r.record.scenario is not None else None
        if not result or "metric" not in result:
            continue
        if r.spec.scenario == "evaluate":
            lines.append(
                f"- accuracy, {_label(r)}: {result['metric']} {result['value']:.4f} on "
                f"{result['samples']} samples ({result.get('split') or 'test split'})"
            )
            continue
        if not result.get("reached"):
            best = result.get("best")
            best_text = f"{best:.4f}" if best is not None else "-"
            lines.append(
                f"- to accuracy, {_label(r)}: {result['metric']} {result['target']} not reached "
                f"(best {best_text})"
            )
            continue
        seconds = float(result["time_to_target_s"])
        cost = (
            f", ${r.price_per_hour_usd * seconds / 3600:,.2f}"
            if r.price_per_hour_usd is not None
            else ""
        )
        lines.append(
            f"- to accuracy, {_label(r)}: {result['metric']} {result['target']} in "
            f"{seconds:,.0f} s ({result['steps_to_target']} steps){cost}"
        )
    return ["", *lines] if lines else []


def _is_base(row: Row, rows: Sequence[Row]) -> bool:
    return any(r.baseline is row for r in rows)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if 0 < abs(value) < 1 and digits >= 2 else f"{value:,.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def group_table(rows: Sequence[Row], fmt: str, wide: bool) -> str:
    """A group's table: narrow by default, every column with ``wide``."""
    from tabulate import tabulate

    if wide:
        headers, body = list(COLUMNS), table_rows(rows)
    else:
        headers, body = narrow_table(rows)
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def render(c: Comparison, fmt: str = "github", wide: bool = False) -> str:
    from tabulate import tabulate

    column = "'charged'" if wide else "'$/h (share)': the share of the instance's GPUs paid"
    intro = (
        f"Prices per hour: {basis_text(c.basis)} (column {column}). Sorted by $ per million "
        "samples; best = cheapest per sample."
    )
    parts = [intro if wide else fill(intro, NARROW_WIDTH)]
    for key, rows in c.groups.items():
        parts.append(f"\n### {group_title(key)}\n")
        parts.append(group_table(rows, fmt, wide))
        parts += one_off_lines(rows)
        parts += accuracy_lines(rows)
    notes = latency_notes([r.record for rows in c.groups.values() for r in rows])
    if notes:
        parts.append("")
        parts += notes if wide else [fill(note, NARROW_WIDTH) for note in notes]
    unpriced = sorted(
        {r.unpriced_reason for rows in c.groups.values() for r in rows if r.unpriced_reason}
    )
    if unpriced:
        text = "Not priced: " + "; ".join(unpriced)
        parts.append("\n" + (text if wide else fill(text, NARROW_WIDTH)))
    if c.scaling:
        parts.append(f"\n## Scaling across GPUs\n\n{SCALING_NOTE}")
    for skey, points in c.scaling.items():
        parts.append(f"\n### {scaling_title(skey)}\n")
        parts.append(
            tabulate(
                scaling_rows(points), headers=SCALING_COLUMNS, tablefmt=fmt, disable_numparse=True
            )
        )
    if c.serving:
        parts.append("\n## Cost at a latency bound (LoadGen server scenario)\n")
        parts += serving_summary_lines(c.serving)
    for key, srows in c.serving.items():
        parts.append(f"\n### {serving_title(key)}\n")
        headers, body = list(SERVING_COLUMNS), serving_table_rows(srows)
        if not wide:
            keep = [i for i, h in enumerate(headers) if h in NARROW_SERVING_COLUMNS]
            headers, body = [headers[i] for i in keep], [[r[i] for i in keep] for r in body]
        parts.append(tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True))
    if c.failed_runs:
        parts.append("\nRuns that did not finish (not compared):")
        parts += [
            f"- {_label(r)}: {r.record.outcome.status}: {r.record.outcome.message}"
            for r in c.failed_runs
        ]
    if c.unmatched:
        parts.append("\nNot compared (spec mismatch):")
        parts += [f"- {line}" for line in c.unmatched]
    return "\n".join(parts)


def gate_verdict(c: Comparison) -> tuple[list[str], bool]:
    """The regression gate's report lines and whether it passed. A gate that matched no
    baseline run checked nothing, and fails."""
    if c.regressions:
        lines = [f"\n{len(c.regressions)} regression(s):", *(f"- {r}" for r in c.regressions)]
        return lines, False
    if c.gated == 0:
        return ["\nregression gate: no run matched a baseline run, nothing was checked"], False
    return [f"\nregression gate: {c.gated} run(s) within limits"], True
