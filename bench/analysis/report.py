"""``bench report``: a page for a buyer, in Markdown, self-contained HTML (charts embedded)
and CSV. Its first screen is the decision table (per job, the cheapest instance and path,
the runner-up and by how much); then per job ranked charts of cost and throughput (or the
latency-load curve of serving), the tables, scaling, the environment of each instance,
telemetry over time, and the harness's own overhead in an appendix."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.analysis.compare import (
    Comparison,
    accuracy_lines,
    group_title,
    latency_notes,
    narrow_table,
    one_off_lines,
)
from bench.analysis.decision import (
    Job,
    decision_jobs,
    measures_harness,
    serving_title_of,
    unpriced_notes,
)
from bench.analysis.pricing import basis_text
from bench.analysis.rows import Row
from bench.analysis.scaling import (
    SCALING_COLUMNS,
    SCALING_NOTE,
    ScalingPoint,
    scaling_rows,
    scaling_title,
)
from bench.analysis.serving import COLUMNS as SERVING_COLUMNS
from bench.analysis.serving import ServingRow
from bench.analysis.serving import table_rows as serving_table_rows
from bench.analysis.units import plain, ratio, tick, usd
from bench.run import registry

CSV_FIELDS = (
    "run_id",
    "workload",
    "mode",
    "backend",
    "precision",
    "batch",
    "shape",
    "device",
    "instance",
    "hardware",
    "samples_per_s",
    "p50_ms",
    "p99_ms",
    "util_pct",
    "energy_per_sample_j",
    "price_per_hour_usd",
    "usd_per_million",
    "samples_per_usd",
    "usd_per_epoch",
    "hours_per_epoch",
    "charged_as",
)
#: Columns taken from the comparison row as they are.
_ROW_FIELDS = CSV_FIELDS[8:-1]


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost and latency (lower is better
    on both; a point is beaten when another is no worse on both and better on one)."""
    keep = []
    for i, (c, lat) in enumerate(points):
        beaten = any(
            (c2 <= c and l2 <= lat) and (c2 < c or l2 < lat)
            for j, (c2, l2) in enumerate(points)
            if j != i
        )
        if not beaten:
            keep.append(i)
    return sorted(keep, key=lambda i: points[i])


def write_csv(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            s = r.spec
            writer.writerow(
                {
                    "run_id": r.run_id,
                    "workload": s.workload,
                    "mode": s.mode,
                    "backend": s.backend,
                    "precision": s.precision,
                    "batch": s.batch,
                    "shape": registry.workload_info(s.workload).shape_value(s),
                    "device": s.device,
                    **{k: getattr(r, k) for k in _ROW_FIELDS},
                    "charged_as": r.price.charged_as if r.price is not None else None,
                }
            )


#: A piece of the report, rendered to Markdown and HTML alike: ("h1" | "h2" | "h3" | "p" |
#: "note", text), ("ul", items), ("table", headers, rows, css class), ("img", name).
Block = tuple[Any, ...]


class Figures:
    """Matplotlib figures rendered to PNG bytes (the Agg backend: no display needed), with
    the labels each drew, so that a test can check no two bars or lines share one."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter

        self.plt = plt
        self.formatter = FuncFormatter
        self.images: dict[str, bytes] = {}
        self.labels: dict[str, list[str]] = {}

    def save(self, name: str, fig: Any) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        self.plt.close(fig)
        self.images[name] = buf.getvalue()

    def _axis(self, axis: Any, dollars: bool) -> None:
        axis.set_major_formatter(self.formatter(lambda v, _pos: tick(v, dollars)))

    def bars(
        self,
        name: str,
        title: str,
        xlabel: str,
        items: Sequence[tuple[str, float, bool]],
        dollars: bool,
    ) -> None:
        """Ranked horizontal bars, one per (label, value, valid); invalid ones grey."""
        labels = [k if ok else f"{k} (invalid)" for k, _, ok in items]
        values = [v for _, v, _ in items]
        self.labels[name] = labels
        fig, ax = self.plt.subplots(figsize=(9, 0.36 * len(items) + 1.2))
        ys = list(range(len(items)))
        colors = ["#4c72b0" if ok else "#bbbbbb" for _, _, ok in items]
        ax.barh(ys, values, color=colors)
        ax.set_yticks(ys, labels, fontsize=8)  # positions, not names: a repeat cannot merge
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, max(values, default=1.0) * 1.22 or 1.0)
        self._axis(ax.xaxis, dollars)
        for y, v in zip(ys, values, strict=True):
            text = usd(v) if dollars else plain(v)
            ax.text(v, y, f" {text}", va="center", fontsize=8)
        self.save(name, fig)

    def frontier(
        self, name: str, title: str, points: Sequence[tuple[str, float, float]]
    ) -> list[str]:
        """(label, $ per 1M, p99 ms) by cost and latency; returns the labels on the frontier."""
        pairs = [(x, y) for _, x, y in points]
        best = pareto_frontier(pairs)
        self.labels[name] = [label for label, _, _ in points]
        fig, ax = self.plt.subplots(figsize=(8, 4.5))
        ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], color="#999999")
        ax.plot(
            [pairs[i][0] for i in best],
            [pairs[i][1] for i in best],
            "o-",
            color="#c44e52",
            label="frontier: not beaten on both",
        )
        for label, x, y in points:
            ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("$ per million samples")
        ax.set_ylabel("p99 latency per batch (ms)")
        self._axis(ax.xaxis, True)
        self._axis(ax.yaxis, False)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        self.save(name, fig)
        return [points[i][0] for i in best]

    def load_curve(
        self, name: str, title: str, rows: Sequence[tuple[str, ServingRow]], bound_ms: float
    ) -> None:
        """Latency at the bound's percentile against the offered load, per (label, row);
        VALID runs filled, INVALID hollow; the bound as a line."""
        fig, ax = self.plt.subplots(figsize=(8, 4.5))
        drawn = []
        for label, row in rows:
            points = [(q, lat, ok) for q, lat, ok in row.curve if lat is not None]
            if not points:
                continue
            drawn.append(label)
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], "-", label=label)
            for q, lat, ok in points:
                ax.plot(q, lat, "o", color=line.get_color(), fillstyle="full" if ok else "none")
        self.labels[name] = drawn
        ax.axhline(bound_ms, color="#c44e52", linestyle="--", label=f"bound {bound_ms:g} ms")
        ax.set_xlim(left=0)  # a load from zero: one point does not get a 1.9-2.1 axis
        ax.set_ylim(bottom=0)
        ax.set_xlabel("offered load (queries/s)")
        ax.set_ylabel("latency at the bound's percentile (ms)")
        self._axis(ax.xaxis, False)
        self._axis(ax.yaxis, False)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        self.save(name, fig)

    def scaling_curve(self, name: str, title: str, points: list[ScalingPoint]) -> None:
        """Samples/s against GPUs, with perfect scaling from the one-GPU run as a line."""
        fig, ax = self.plt.subplots(figsize=(7, 4.5))
        xs = [p.ranks for p in points if p.row.samples_per_s is not None]
        ys = [p.row.samples_per_s for p in points if p.row.samples_per_s is not None]
        ax.plot(xs, ys, "o-", label="measured")
        self.labels[name] = ["measured"]
        one = next((p for p in points if p.ranks == 1 and p.row.samples_per_s), None)
        if one is not None and one.row.samples_per_s:
            ideal = [n * one.row.samples_per_s for n in xs]
            ax.plot(xs, ideal, "--", color="#888", label="perfect scaling")
            self.labels[name].append("perfect scaling")
        ax.set_xticks(sorted(set(xs)))
        ax.set_xlabel("GPUs (ranks)")
        ax.set_ylabel("samples/s")
        self._axis(ax.yaxis, False)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        self.save(name, fig)

    def telemetry(self, name: str, runs: list[tuple[str, Row, list[dict[str, str]]]]) -> None:
        """Utilization (and power where measured) over time, one panel per (label, run)."""
        self.labels[name] = [label for label, _, _ in runs]
        fig, axes = self.plt.subplots(len(runs), 1, figsize=(9, 2.2 * len(runs)), squeeze=False)
        for ax, (label, _row, samples) in zip(axes[:, 0], runs, strict=True):
            t0 = float(samples[0]["t_unix"])
            t = [float(s["t_unix"]) - t0 for s in samples]
            util_key = (
                "util_gpu_pct" if samples[0].get("util_gpu_pct") not in (None, "") else "cpu_pct"
            )
            util = [_float(s.get(util_key)) for s in samples]
            ax.plot(
                t,
                util,
                color="#4c72b0",
                label="GPU util %" if util_key == "util_gpu_pct" else "CPU util %",
            )
            ax.set_ylim(0, 105)
            ax.set_ylabel("util %")
            measure = [x for x, s in zip(t, samples, strict=True) if s["phase"] == "measure"]
            if measure:
                ax.axvspan(min(measure), max(measure), color="#dddddd", label="measured")
            power = [_float(s.get("power_w")) for s in samples]
            if any(p is not None for p in power):
                ax2 = ax.twinx()
                ax2.plot(t, power, color="#c44e52", label="power W")
                ax2.set_ylabel("W")
            ax.set_title(label, fontsize=9)
            ax.legend(fontsize=7, loc="lower left")
        axes[-1, 0].set_xlabel("seconds since the first sample")
        fig.tight_layout()
        self.save(name, fig)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _read_series(row: Row) -> list[dict[str, str]]:
    name = row.record.telemetry.timeseries_csv
    path = row.path.parent / name if name else None
    if path is None or not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


DECISION_COLUMNS = (
    "job",
    "figure",
    "cheapest: instance · path",
    "its figure",
    "valid",
    "runner-up",
    "its figure",
    "valid",
    "runner-up / cheapest",
    "priced",
)


def decision_rows(jobs: Sequence[Job]) -> list[list[str]]:
    """One row per job: the cheapest candidate, the runner-up, and the ratio between them."""
    out = []
    for job in jobs:
        best, second = job.best, job.runner_up
        if best is None:
            why = job.candidates[0].missing if job.candidates else None
            cheapest = [f"none: {why or 'no figure'}", "-", "-"]
        else:
            cheapest = [best.label, usd(best.figure), best.validity_text()]
        if second is None:
            runner = ["-", "-", "-"]
        else:
            runner = [second.label, usd(second.figure), second.validity_text()]
        out.append(
            [
                job.title,
                job.measure,
                *cheapest,
                *runner,
                ratio(job.ratio),
                f"{len(job.priced)} of {len(job.candidates)}",
            ]
        )
    return out


DECISION_NOTE = (
    "Cheapest: the lowest figure among valid ones (an invalid figure ranks only after every "
    "valid one). A figure is invalid when its run carries a flag that touches it (the GPU "
    "throttled or shared, LoadGen's INVALID, ...); flags about latency percentiles, energy or "
    "MFU leave it valid. 'runner-up / cheapest': how much more the next choice costs."
)

ENVIRONMENT_COLUMNS = (
    "instance",
    "hardware",
    "CPU",
    "cores",
    "memory",
    "GPUs",
    "driver",
    "software",
    "runs",
)


def environment_rows(rows: Sequence[Row]) -> list[list[str]]:
    """One row per instance and hardware: the machine and the software its runs used."""
    by: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by.setdefault((row.instance or "-", row.hardware), []).append(row)
    out = []
    for (instance, hardware), members in by.items():
        env = members[0].record.environment
        memory = env.memory_total_bytes
        gpus = f"{env.gpu_count} x {env.gpus[0].name}" if env.gpus else "none"
        software = sorted(
            {
                f"{r.spec.backend} {r.record.environment.packages.get(r.spec.backend, '?')}"
                for r in members
            }
        )
        python = sorted({r.record.environment.python or "?" for r in members})
        out.append(
            [
                instance,
                hardware,
                env.cpu_model or "-",
                str(env.cpu_count_usable or env.cpu_count_logical or "-"),
                f"{memory / 2**30:.0f} GiB" if memory else "-",
                gpus,
                env.driver_version or "-",
                ", ".join([*software, *(f"Python {p}" for p in python)]),
                str(len(members)),
            ]
        )
    return out


def _lines(lines: Sequence[str]) -> list[str]:
    """compare's "- " lines as list items."""
    return [line[2:] if line.startswith("- ") else line for line in lines if line.strip()]


@dataclass
class Report:
    """The report before it is written: its blocks, chart images and the labels each drew."""

    blocks: list[Block]
    images: dict[str, bytes]
    labels: dict[str, list[str]]
    rows: list[Row]


def assemble(c: Comparison, title: str = "Benchmark report") -> Report:
    """The report's blocks in reading order: what to price, the decision table, a section
    per job, scaling, environments, telemetry, then the harness's own overhead."""
    figs = Figures()
    jobs = decision_jobs(c)
    blocks: list[Block] = [("h1", title)]
    unpriced = unpriced_notes(c)
    if unpriced:
        blocks += [("note", "Not priced, so not ranked in the table below:"), ("ul", unpriced)]
    blocks += [
        ("h2", "Which instance and path, per job"),
        ("table", list(DECISION_COLUMNS), decision_rows(jobs), "decision"),
        ("p", f"{DECISION_NOTE} Prices: {basis_text(c.basis)}. Machine-readable: runs.csv."),
    ]
    for i, job in enumerate(jobs):
        blocks += _job_blocks(figs, i, job)
    blocks += _scaling_blocks(figs, c)
    all_rows = [row for rows in c.groups.values() for row in rows]
    harness = [r for r in all_rows if measures_harness(r.spec.workload)]
    measured = [r for r in all_rows if not measures_harness(r.spec.workload)]
    if measured:
        blocks += [
            ("h2", "Environment of each instance"),
            ("table", list(ENVIRONMENT_COLUMNS), environment_rows(measured), ""),
        ]
    labels = {cand.row.run_id: cand.label for job in jobs for cand in job.candidates if cand.row}
    series = [
        (f"{r.spec.workload} {r.spec.mode}: {labels.get(r.run_id, r.run_id)}", r, s)
        for r in measured
        if (s := _read_series(r))
    ]
    if series:
        figs.telemetry("telemetry", series)
        blocks += [("h2", "Telemetry over time"), ("img", "telemetry")]
    if harness:
        blocks += _appendix_blocks(c, harness)
    if c.unmatched or c.failed_runs:
        failed = [f"{r.run_id}: {r.record.outcome.status}" for r in c.failed_runs]
        blocks += [("h2", "Not compared"), ("ul", [*c.unmatched, *failed])]
    return Report(blocks, figs.images, figs.labels, all_rows)


def build(c: Comparison, out_dir: Path, title: str = "Benchmark report") -> dict[str, Path]:
    """Write report.md, report.html (self-contained), runs.csv and the PNGs into out_dir."""
    report = assemble(c, title)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "runs.csv",
        "md": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    write_csv(report.rows, paths["csv"])
    for name, data in report.images.items():
        (out_dir / f"{name}.png").write_bytes(data)
    paths["md"].write_text(_markdown(report.blocks))
    paths["html"].write_text(_html(title, report.blocks, report.images))
    return paths


def _job_blocks(figs: Figures, i: int, job: Job) -> list[Block]:
    blocks: list[Block] = [("h2", f"{job.title}: {job.measure}")]
    priced = job.priced
    if priced:
        name = f"cost_{i}"
        figs.bars(
            name,
            f"{job.title}: {job.measure}",
            job.measure.split(" (")[0],
            [(c.label, c.figure or 0.0, c.valid) for c in priced],
            dollars=True,
        )
        blocks.append(("img", name))
    if job.serving_key is not None:
        srows = [(c.label, c.serving) for c in job.candidates if c.serving is not None]
        name = f"serving_{i}"
        figs.load_curve(name, serving_title_of(job), srows, job.serving_key[2])
        blocks += [
            ("img", name),
            (
                "table",
                list(SERVING_COLUMNS),
                serving_table_rows([r for _, r in srows]),
                "",
            ),
        ]
        return blocks
    fast = sorted(
        (c for c in job.candidates if c.samples_per_s is not None),
        key=lambda c: -(c.samples_per_s or 0.0),
    )
    if fast:
        name = f"throughput_{i}"
        figs.bars(
            name,
            f"{job.title}: samples/s",
            "samples/s",
            [(c.label, c.samples_per_s or 0.0, c.valid) for c in fast],
            dollars=False,
        )
        blocks.append(("img", name))
    rows = [c.row for c in job.candidates if c.row is not None]
    headers, body = narrow_table(rows)
    blocks.append(("table", headers, body, ""))
    with_p99 = [
        (c.label, c.figure, c.row.p99_ms)
        for c in priced
        if c.row is not None and c.row.p99_ms is not None and job.key[1] == "infer"
    ]
    if len(with_p99) >= 2:
        name = f"frontier_{i}"
        points = [(label, float(x or 0.0), float(y or 0.0)) for label, x, y in with_p99]
        best = figs.frontier(name, f"Latency vs cost: {job.title}", points)
        blocks += [("img", name), ("p", "Not beaten on both p99 and cost: " + "; ".join(best))]
    notes = _lines(one_off_lines(rows) + accuracy_lines(rows))
    notes += latency_notes([r.record for r in rows])
    if notes:
        blocks.append(("ul", notes))
    return blocks


def _scaling_blocks(figs: Figures, c: Comparison) -> list[Block]:
    """Scaling curves only where there are two or more points to draw."""
    blocks: list[Block] = []
    for i, (skey, points) in enumerate(c.scaling.items()):
        if len([p for p in points if p.row.samples_per_s is not None]) < 2:
            continue
        if not blocks:
            blocks += [("h2", "Scaling across GPUs"), ("p", SCALING_NOTE)]
        name = f"scaling_{i}"
        figs.scaling_curve(name, scaling_title(skey), points)
        blocks += [
            ("h3", scaling_title(skey)),
            ("table", list(SCALING_COLUMNS), scaling_rows(points), ""),
            ("img", name),
        ]
    return blocks


def _appendix_blocks(c: Comparison, harness: Sequence[Row]) -> list[Block]:
    ids = {r.run_id for r in harness}
    blocks: list[Block] = [
        ("h2", "Appendix: harness overhead"),
        (
            "p",
            "Runs of a workload that does no work: their step time is the harness's own cost "
            "per step (a clock read, a list append, a progress update), not a figure to buy on.",
        ),
    ]
    for key, rows in c.groups.items():
        members = [r for r in rows if r.run_id in ids]
        if members:
            headers, body = narrow_table(members)
            blocks += [("h3", group_title(key)), ("table", headers, body, "")]
    return blocks


def _markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "note":
            lines += [f"**{block[1]}**", ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            text = tabulate(block[2], headers=block[1], tablefmt="github", disable_numparse=True)
            lines += [text, ""]
        elif kind == "img":
            lines += [f"![{block[1]}]({block[1]}.png)", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


_STYLE = (
    "body{font-family:sans-serif;max-width:1340px;margin:1em auto;padding:0 1em;color:#222}"
    "h1{font-size:24px;margin:.3em 0}h2{font-size:19px;margin:1.2em 0 .4em}"
    "table{border-collapse:collapse;font-size:13px;margin:.6em 0}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    "table.decision td,table.decision th{text-align:left;font-size:14px;padding:4px 8px}"
    "table.decision td:nth-child(4){font-weight:bold}"
    ".note{background:#fff4e0;border-left:4px solid #e0a030;padding:4px 10px;margin:.4em 0}"
    ".note ul{margin:.2em 0}"
    "p{font-size:13px;color:#444}"
    "img{max-width:100%;display:block;margin:.8em 0}"
)


def _html(title: str, blocks: Sequence[Block], images: dict[str, bytes]) -> str:
    body: list[str] = []
    in_note = False
    for block in blocks:
        kind = block[0]
        if in_note and kind != "ul":
            body.append("</div>")
            in_note = False
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "note":
            body.append(f'<div class="note"><b>{html.escape(block[1])}</b>')
            in_note = True
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
            if in_note:
                body.append("</div>")
                in_note = False
        elif kind == "table":
            text = tabulate(block[2], headers=block[1], tablefmt="html", disable_numparse=True)
            if block[3]:
                text = text.replace("<table>", f'<table class="{block[3]}">', 1)
            body.append(text)
        elif kind == "img":
            data = base64.b64encode(images[block[1]]).decode()
            body.append(f'<img alt="{block[1]}" src="data:image/png;base64,{data}">')
    if in_note:
        body.append("</div>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
