"""The buyer's question, one row per job: which instance and framework path does the job
cheapest, by how much over the runner-up, and whether each figure can be trusted.

A job is what a buyer pays for, derived from the runs: training a workload at an input size
(dollars per epoch, or to an accuracy target where a run trained to one), serving it at a
latency bound (dollars per million inferences at the highest load LoadGen found valid), or
inference at full throughput (dollars per million inferences). Workloads that declare they
measure the harness itself are left out (the report's appendix shows them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.analysis.compare import Comparison
from bench.analysis.labels import unique_labels
from bench.analysis.rows import Row
from bench.analysis.serving import ServingKey, ServingRow
from bench.analysis.serving import title as serving_title
from bench.run import registry

#: Validity flags that concern another figure than a job's cost (a latency percentile,
#: energy, MFU, the spread of step times): they leave the cost figure valid. Every other
#: flag (the GPU throttled or shared, LoadGen's INVALID, ...) makes it invalid.
COST_NEUTRAL_FLAGS = frozenset(
    {"few_iterations", "short_energy_window", "mfu_above_peak", "high_cv"}
)
#: Why a candidate has no figure when its run has no price (the report says why above).
NOT_PRICED = "not priced (see above)"
#: Scenarios that yield no cost figure of their own (an evaluation measures accuracy only;
#: server runs are ranked at their latency bound, from ``Comparison.serving``).
_NO_COST_SCENARIOS = ("evaluate", "server")
#: Scenarios that all measure inference at full throughput.
_THROUGHPUT_SCENARIOS = ("loop", "offline")


@dataclass
class Candidate:
    """One instance and path for a job, with its figure."""

    #: Label parts in the order they are added to tell candidates apart.
    parts: tuple[str, ...]
    figure: float | None
    #: Flag codes that make the figure invalid (empty: valid).
    invalid: tuple[str, ...] = ()
    #: Why there is no figure (unpriced, target not reached, no valid load).
    missing: str | None = None
    samples_per_s: float | None = None
    row: Row | None = None
    serving: ServingRow | None = None
    label: str = ""

    @property
    def valid(self) -> bool:
        return not self.invalid

    def validity_text(self) -> str:
        if self.figure is None:
            return "-"
        return "yes" if self.valid else "no: " + ", ".join(self.invalid)


@dataclass
class Job:
    """A job and its candidates ranked: valid figures cheapest first, then invalid ones,
    then candidates with no figure."""

    key: tuple[Any, ...]
    title: str
    #: What the figure is: ``$ per epoch (16,551 samples)``, ``$ per 1M inferences``.
    measure: str
    #: ``$``-figures are per epoch, per 1M or per run; the unit written after the value.
    unit: str
    candidates: list[Candidate] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    serving_key: ServingKey | None = None

    @property
    def priced(self) -> list[Candidate]:
        return [c for c in self.candidates if c.figure is not None]

    @property
    def best(self) -> Candidate | None:
        priced = self.priced
        return priced[0] if priced else None

    @property
    def runner_up(self) -> Candidate | None:
        priced = self.priced
        return priced[1] if len(priced) > 1 else None

    @property
    def ratio(self) -> float | None:
        """The runner-up's figure over the cheapest's: how much more the next choice costs."""
        best, second = self.best, self.runner_up
        if best is None or second is None or not best.figure or second.figure is None:
            return None
        return second.figure / best.figure


def row_parts(row: Row) -> tuple[str, ...]:
    """A run's label parts: where, path (backend and execution mode), precision and batch,
    then what else can tell two runs apart, the run id last."""
    s = row.spec
    info = registry.workload_info(s.workload)
    return (
        row.instance or row.hardware,
        s.backend_label,
        s.precision,
        f"b{s.batch}",
        row.hardware if row.instance else "",
        info.shape_text(s, "column"),
        s.scenario,
        "h2d timed" if s.include_h2d else "h2d untimed",
        f"data {s.data}" if s.data else "synthetic",
        row.run_id,
    )


def measures_harness(workload: str) -> bool:
    return registry.workload_info(workload).harness_overhead


def invalid_codes(row: Row) -> tuple[str, ...]:
    """The run's flags that make its cost figure invalid, and LoadGen's INVALID."""
    codes = [f.code for f in row.record.validity.flags if f.code not in COST_NEUTRAL_FLAGS]
    if row.record.loadgen_valid is False and "loadgen_invalid" not in codes:
        codes.append("loadgen_invalid")
    return tuple(dict.fromkeys(codes))


def _to_accuracy(row: Row) -> tuple[float | None, str | None]:
    """Dollars to the target: the hourly price times the time the run took to reach it."""
    result = (row.record.scenario.result if row.record.scenario is not None else None) or {}
    if not result.get("reached"):
        return None, "target not reached"
    if row.price_per_hour_usd is None:
        return None, NOT_PRICED
    return row.price_per_hour_usd * float(result["time_to_target_s"]) / 3600, None


def _job_of(row: Row) -> tuple[tuple[Any, ...], str, str, str] | None:
    """(key, title, measure, unit) of the job a run measures, or None."""
    s = row.spec
    info = registry.workload_info(s.workload)
    shape_value = info.shape_value(s)
    shape = info.format_shape(shape_value, "title")
    name = f"{s.workload} {s.mode} {shape}".strip()
    if s.scenario in _NO_COST_SCENARIOS:
        return None
    if s.scenario == "to-accuracy":
        result = (row.record.scenario.result if row.record.scenario is not None else None) or {}
        target = f"{result.get('metric', 'metric')} {result.get('target', '?')}"
        key = (s.workload, s.mode, shape_value, s.scenario, target)
        return key, f"{name} to {target}", f"$ to {target}", "to target"
    if s.mode == "train":
        if info.epoch_samples:
            measure = f"$ per epoch ({info.epoch_samples:,} samples)"
            return (s.workload, s.mode, shape_value, "epoch"), name, measure, "/ epoch"
        return (s.workload, s.mode, shape_value, "1M"), name, "$ per 1M samples", "/ 1M"
    kind = "throughput" if s.scenario in _THROUGHPUT_SCENARIOS else s.scenario
    title = name if kind == "throughput" else f"{name} (LoadGen {kind})"
    measure = "$ per 1M inferences" + (", no latency bound" if kind == "throughput" else "")
    return (s.workload, s.mode, shape_value, kind), title, measure, "/ 1M"


def _row_candidate(job_key: tuple[Any, ...], row: Row) -> Candidate:
    if job_key[3] == "to-accuracy":
        figure, missing = _to_accuracy(row)
    else:
        figure = row.usd_per_epoch if job_key[3] == "epoch" else row.usd_per_million
        unpriced = row.price_per_hour_usd is None
        missing = None if figure is not None else (NOT_PRICED if unpriced else "no figure")
    return Candidate(
        parts=row_parts(row),
        figure=figure,
        invalid=invalid_codes(row) if figure is not None else (),
        missing=missing,
        samples_per_s=row.samples_per_s,
        row=row,
    )


def _serving_candidate(srow: ServingRow) -> Candidate:
    figure = srow.usd_per_million_at_bound
    if figure is None:
        missing = "no load was valid at the bound" if srow.best_qps is None else NOT_PRICED
    else:
        missing = None
    return Candidate(
        parts=(
            srow.instance or srow.hardware,
            srow.backend,
            srow.precision,
            "",  # no batch: the batching server forms its own
            srow.hardware if srow.instance else "",
        ),
        figure=figure,
        missing=missing,
        samples_per_s=srow.best_qps,
        serving=srow,
    )


def _rank(c: Candidate) -> tuple[int, float]:
    if c.figure is None:
        return 2, -(c.samples_per_s or 0.0)
    return (0 if c.valid else 1), c.figure


def decision_jobs(c: Comparison) -> list[Job]:
    """One job per kind of work the runs measured, each with its candidates ranked and
    labelled uniquely; in the order the work first appears, serving jobs after the others
    of their workload."""
    jobs: dict[tuple[Any, ...], Job] = {}
    for rows in c.groups.values():
        for row in rows:
            if measures_harness(row.spec.workload):
                continue
            found = _job_of(row)
            if found is None:
                continue
            key, title, measure, unit = found
            job = jobs.setdefault(key, Job(key, title, measure, unit))
            job.rows.append(row)
            job.candidates.append(_row_candidate(key, row))
    for skey, srows in c.serving.items():
        workload, shape, bound, percentile = skey
        if measures_harness(workload):
            continue
        shape_text = registry.workload_info(workload).format_shape(shape, "title")
        title = f"{workload} serve {shape_text} at p{percentile:g} <= {bound:g} ms".replace(
            "  ", " "
        )
        key = (workload, "serve", shape, bound, percentile)
        job = Job(
            key,
            title,
            "$ per 1M inferences at the bound",
            "/ 1M",
            [_serving_candidate(r) for r in srows],
            serving_key=skey,
        )
        jobs[key] = job
    ordered = sorted(jobs.values(), key=lambda j: _job_order(j, list(jobs)))
    for job in ordered:
        job.candidates.sort(key=_rank)
        labels = unique_labels([c.parts for c in job.candidates], always=4)
        for cand, label in zip(job.candidates, labels, strict=True):
            cand.label = label
    return ordered


def _job_order(job: Job, keys: Sequence[tuple[Any, ...]]) -> tuple[int, int, int]:
    """By workload as first seen, training before inference, then as first seen."""
    first = next(i for i, k in enumerate(keys) if k[0] == job.key[0])
    return first, 0 if job.key[1] == "train" else 1, list(keys).index(job.key)


def serving_title_of(job: Job) -> str:
    return serving_title(job.serving_key) if job.serving_key is not None else job.title


def unpriced_notes(c: Comparison) -> list[str]:
    """Runs with no price, by reason and hardware, each with how to price them."""
    counts: dict[tuple[str, str], int] = {}
    for rows in c.groups.values():
        for row in rows:
            if row.price_per_hour_usd is not None or measures_harness(row.spec.workload):
                continue
            why = row.unpriced_reason or f"no trusted price for {row.instance}"
            counts[(why, row.hardware)] = counts.get((why, row.hardware), 0) + 1
    notes = []
    for (why, hardware), n in counts.items():
        runs = f"{n} run{'s' if n != 1 else ''} on {hardware}"
        if "not in the price catalogue" in why or why.startswith("no trusted price"):
            how = "add its price with --prices FILE (a price file)"
        else:
            how = (
                f"price them with --instance '{hardware}=TYPE' (an instance type of the "
                "price catalogue) or --price-per-hour USD"
            )
        notes.append(f"{runs}: {why}; {how}")
    return notes
