"""``bench report``: Markdown, a self-contained HTML page (plots embedded) and CSV from
any set of runs: throughput by instance and backend, cost per million samples, the
latency-versus-cost frontier, and each run's telemetry over time."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.analysis.compare import COLUMNS, Comparison, Row, group_title, table_rows
from bench.analysis.pricing import basis_text
from bench.analysis.scaling import (
    SCALING_COLUMNS,
    SCALING_NOTE,
    ScalingPoint,
    scaling_rows,
    scaling_title,
)
from bench.analysis.serving import COLUMNS as SERVING_COLUMNS
from bench.analysis.serving import ServingRow
from bench.analysis.serving import summary_lines as serving_summary_lines
from bench.analysis.serving import table_rows as serving_table_rows
from bench.analysis.serving import title as serving_title
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


def row_label(row: Row) -> str:
    s = row.spec
    return f"{row.instance or row.hardware} · {s.backend} · {s.precision}"


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


class Figures:
    """Matplotlib figures rendered to PNG bytes (the Agg backend: no display needed)."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.images: dict[str, bytes] = {}

    def save(self, name: str, fig: Any) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        self.plt.close(fig)
        self.images[name] = buf.getvalue()

    def bars(self, name: str, title: str, xlabel: str, items: list[tuple[str, float]]) -> None:
        fig, ax = self.plt.subplots(figsize=(8, 0.45 * len(items) + 1.2))
        labels = [k for k, _ in items]
        ax.barh(labels, [v for _, v in items], color="#4c72b0")
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for i, (_, v) in enumerate(items):
            ax.text(v, i, f" {v:,.3g}", va="center", fontsize=8)
        self.save(name, fig)

    def frontier(self, name: str, title: str, rows: list[Row]) -> list[Row]:
        """Plot priced runs with a p99 by cost and latency; return those on the frontier."""
        rows = [r for r in rows if r.usd_per_million is not None and r.p99_ms is not None]
        points = [(r.usd_per_million or 0.0, r.p99_ms or 0.0) for r in rows]
        best = pareto_frontier(points)
        fig, ax = self.plt.subplots(figsize=(8, 5))
        ax.scatter([p[0] for p in points], [p[1] for p in points], color="#999999")
        ax.plot(
            [points[i][0] for i in best],
            [points[i][1] for i in best],
            "o-",
            color="#c44e52",
            label="frontier: not beaten on both",
        )
        for r, (x, y) in zip(rows, points, strict=True):
            ax.annotate(row_label(r), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("$ per million samples")
        ax.set_ylabel("p99 latency per batch (ms)")
        ax.set_title(title)
        ax.legend(fontsize=8)
        self.save(name, fig)
        return [rows[i] for i in best]

    def load_curve(self, name: str, title: str, rows: list[ServingRow], bound_ms: float) -> None:
        """Latency at the bound's percentile against the offered load, per instance and
        path; VALID runs filled, INVALID hollow; the bound as a line."""
        fig, ax = self.plt.subplots(figsize=(8, 5))
        for row in rows:
            points = [(q, lat, ok) for q, lat, ok in row.curve if lat is not None]
            if not points:
                continue
            label = f"{row.instance or row.hardware} · {row.backend} · {row.precision}"
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], "-", label=label)
            for q, lat, ok in points:
                ax.plot(q, lat, "o", color=line.get_color(), fillstyle="full" if ok else "none")
        ax.axhline(bound_ms, color="#c44e52", linestyle="--", label=f"bound {bound_ms:g} ms")
        ax.set_xlabel("offered load (queries/s)")
        ax.set_ylabel("latency at the bound's percentile (ms)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        self.save(name, fig)

    def scaling_curve(self, name: str, title: str, points: list[ScalingPoint]) -> None:
        """Samples/s against GPUs, with perfect scaling from the one-GPU run as a line."""
        fig, ax = self.plt.subplots(figsize=(7, 4.5))
        xs = [p.ranks for p in points if p.row.samples_per_s is not None]
        ys = [p.row.samples_per_s for p in points if p.row.samples_per_s is not None]
        ax.plot(xs, ys, "o-", label="measured")
        one = next((p for p in points if p.ranks == 1 and p.row.samples_per_s), None)
        if one is not None and one.row.samples_per_s:
            ideal = [n * one.row.samples_per_s for n in xs]
            ax.plot(xs, ideal, "--", color="#888", label="perfect scaling")
        ax.set_xlabel("GPUs (ranks)")
        ax.set_ylabel("samples/s")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        self.save(name, fig)

    def telemetry(self, name: str, runs: list[tuple[Row, list[dict[str, str]]]]) -> None:
        fig, axes = self.plt.subplots(len(runs), 1, figsize=(9, 2.2 * len(runs)), squeeze=False)
        for ax, (row, samples) in zip(axes[:, 0], runs, strict=True):
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
            spec = row.spec
            ax.set_title(
                f"{spec.workload} {spec.mode} {spec.backend} {spec.precision} "
                f"b{spec.batch} on {row.hardware}",
                fontsize=9,
            )
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


def build(c: Comparison, out_dir: Path, title: str = "Benchmark report") -> dict[str, Path]:
    """Write report.md, report.html (self-contained), runs.csv and the PNGs into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = Figures()
    sections: list[tuple[str, list[str]]] = []  # (heading, image names) per group
    all_rows: list[Row] = []
    frontier_lines: list[str] = []
    for i, (key, rows) in enumerate(c.groups.items()):
        all_rows += rows
        images = []
        name = f"throughput_{i}"
        figs.bars(
            name,
            f"Throughput: {group_title(key)}",
            "samples/s",
            [(row_label(r), r.samples_per_s) for r in rows if r.samples_per_s is not None],
        )
        images.append(name)
        priced = [r for r in rows if r.usd_per_million is not None]
        if priced:
            name = f"cost_{i}"
            figs.bars(
                name,
                f"$ per million samples: {group_title(key)}",
                "USD",
                [(row_label(r), r.usd_per_million or 0.0) for r in priced],
            )
            images.append(name)
            with_p99 = [r for r in priced if r.p99_ms is not None]
            if len(with_p99) >= 2:
                name = f"frontier_{i}"
                best = figs.frontier(name, f"Latency vs cost: {group_title(key)}", with_p99)
                images.append(name)
                frontier_lines.append(
                    f"{group_title(key)}: " + "; ".join(row_label(r) for r in best)
                )
        sections.append((group_title(key), images))
    serving_images = []
    for i, (skey, srows) in enumerate(c.serving.items()):
        name = f"serving_{i}"
        figs.load_curve(name, serving_title(skey), srows, skey[2])
        serving_images.append(name)
    for i, (scaling_key_, points) in enumerate(c.scaling.items()):
        figs.scaling_curve(f"scaling_{i}", scaling_title(scaling_key_), points)
    series = [(r, s) for r in all_rows if (s := _read_series(r))]
    if series:
        figs.telemetry("telemetry", series)
    paths = {
        "csv": out_dir / "runs.csv",
        "md": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    write_csv(all_rows, paths["csv"])
    for name, data in figs.images.items():
        (out_dir / f"{name}.png").write_bytes(data)
    groups = list(c.groups.items())
    paths["md"].write_text(
        _markdown(title, c, groups, sections, frontier_lines, bool(series), serving_images)
    )
    paths["html"].write_text(
        _html(title, c, groups, sections, frontier_lines, figs.images, serving_images)
    )
    return paths


def _basis(c: Comparison) -> str:
    return basis_text(c.basis)


Groups = list[tuple[tuple[Any, ...], list[Row]]]
Sections = list[tuple[str, list[str]]]


def _markdown(
    title: str,
    c: Comparison,
    groups: Groups,
    sections: Sections,
    frontier: list[str],
    has_series: bool,
    serving_images: list[str],
) -> str:
    lines = [
        f"# {title}",
        "",
        f"Runs sorted by $ per million samples ({_basis(c)}); "
        "best = cheapest per sample. Machine-readable: [runs.csv](runs.csv).",
        "",
    ]
    if c.serving:
        lines += ["## Cost at a latency bound (LoadGen server scenario)", ""]
        lines += [f"- {line}" for line in serving_summary_lines(c.serving)] + [""]
        for (skey, srows), name in zip(c.serving.items(), serving_images, strict=True):
            lines += [
                f"### {serving_title(skey)}",
                "",
                tabulate(
                    serving_table_rows(srows),
                    headers=SERVING_COLUMNS,
                    tablefmt="github",
                    disable_numparse=True,
                ),
                "",
                f"![{name}]({name}.png)",
                "",
            ]
    for i, (skey, points) in enumerate(c.scaling.items()):
        if i == 0:
            lines += ["## Scaling across GPUs", "", SCALING_NOTE, ""]
        lines += [
            f"### {scaling_title(skey)}",
            "",
            tabulate(
                scaling_rows(points),
                headers=SCALING_COLUMNS,
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
            f"![scaling_{i}](scaling_{i}.png)",
            "",
        ]
    for (_, rows), (heading, images) in zip(groups, sections, strict=True):
        lines += [
            f"## {heading}",
            "",
            tabulate(table_rows(rows), headers=COLUMNS, tablefmt="github", disable_numparse=True),
            "",
        ]
        lines += [f"![{name}]({name}.png)" for name in images] + [""]
    if frontier:
        lines += [
            "## Latency-versus-cost frontier",
            "",
            "Runs no other run beats on both p99 latency and cost:",
            "",
        ]
        lines += [f"- {line}" for line in frontier] + [""]
    if has_series:
        lines += ["## Telemetry over time", "", "![telemetry](telemetry.png)", ""]
    if c.unmatched or c.failed_runs:
        lines += ["## Not compared", ""]
        lines += [f"- {u}" for u in c.unmatched]
        lines += [f"- {r.run_id}: {r.record.outcome.status}" for r in c.failed_runs]
    return "\n".join(lines) + "\n"


def _html(
    title: str,
    c: Comparison,
    groups: Groups,
    sections: Sections,
    frontier: list[str],
    images: dict[str, bytes],
    serving_images: list[str],
) -> str:
    def img(name: str) -> str:
        data = base64.b64encode(images[name]).decode()
        return f'<img alt="{name}" src="data:image/png;base64,{data}">'

    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Runs sorted by $ per million samples ({html.escape(_basis(c))}); best = "
        "cheapest per sample.</p>",
    ]
    if c.serving:
        body.append("<h2>Cost at a latency bound (LoadGen server scenario)</h2><ul>")
        body += [f"<li>{html.escape(line)}</li>" for line in serving_summary_lines(c.serving)]
        body.append("</ul>")
        for (skey, srows), name in zip(c.serving.items(), serving_images, strict=True):
            body.append(f"<h3>{html.escape(serving_title(skey))}</h3>")
            body.append(
                tabulate(
                    serving_table_rows(srows),
                    headers=SERVING_COLUMNS,
                    tablefmt="html",
                    disable_numparse=True,
                )
            )
            body.append(img(name))
    for i, (skey, points) in enumerate(c.scaling.items()):
        if i == 0:
            body += ["<h2>Scaling across GPUs</h2>", f"<p>{html.escape(SCALING_NOTE)}</p>"]
        body.append(f"<h3>{html.escape(scaling_title(skey))}</h3>")
        body.append(
            tabulate(
                scaling_rows(points),
                headers=SCALING_COLUMNS,
                tablefmt="html",
                disable_numparse=True,
            )
        )
        body.append(img(f"scaling_{i}"))
    for (_, rows), (heading, names) in zip(groups, sections, strict=True):
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(
            tabulate(table_rows(rows), headers=COLUMNS, tablefmt="html", disable_numparse=True)
        )
        body += [img(n) for n in names]
    if frontier:
        body.append("<h2>Latency-versus-cost frontier</h2><ul>")
        body += [f"<li>{html.escape(line)}</li>" for line in frontier]
        body.append("</ul>")
    if "telemetry" in images:
        body += ["<h2>Telemetry over time</h2>", img("telemetry")]
    if c.unmatched or c.failed_runs:
        body.append("<h2>Not compared</h2><ul>")
        body += [f"<li>{html.escape(u)}</li>" for u in c.unmatched]
        body += [f"<li>{html.escape(r.run_id)}</li>" for r in c.failed_runs]
        body.append("</ul>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "img{max-width:100%;display:block;margin:1em 0}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
