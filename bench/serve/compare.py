"""In-process against served at the same latency bound: the two SLA searches' answers side
by side, with what the server said about the served run at its highest valid load (average
batch, queue against compute) and the serving overhead per query.

The overhead is the served run's mean latency (LoadGen's) less the server's mean request time
(serialization, the network and both protocol stacks), both at the served run's highest
VALID load; the in-process run has no such split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run.loadgen_log import from_scenario_result
from bench.run.sla import SlaResult
from bench.run.store import load_record
from bench.schema.record import RunRecord


@dataclass(frozen=True)
class PathFigures:
    """One path's answer at the bound."""

    path: str
    best_qps: float | None
    lowest_invalid_qps: float | None
    #: At the highest VALID load: LoadGen's latency at the bound's percentile, and its mean.
    latency_at_best_ms: float | None
    mean_latency_ms: float | None
    #: Samples per model execution: the batching SUT's, or the server's.
    average_batch: float | None
    queue_share: float | None
    compute_share: float | None
    server_request_ms: float | None
    overhead_ms: float | None
    failed_requests: int | None


def best_record(result: SlaResult, out_dir: Path) -> RunRecord | None:
    """The record of the highest VALID point of a search (None: no point was VALID)."""
    valid = [p for p in result.points if p.valid and p.target_qps == result.best_qps]
    if not valid:
        return None
    return load_record(out_dir / f"{valid[-1].run_id}.json")


def figures(path: str, result: SlaResult, record: RunRecord | None) -> PathFigures:
    """One row: the search's answer and the facts of its best run."""
    res: dict[str, Any] = (record.scenario.result or {}) if record and record.scenario else {}
    sut: dict[str, Any] = res.get("sut") or {}
    loadgen = from_scenario_result(res)
    latency = loadgen.target_latency_ms if loadgen is not None else None
    mean = loadgen.latency_ms("mean") if loadgen is not None else None
    server: dict[str, Any] | None = sut.get("server")
    if "batch_sizes" in sut:  # the in-process batching SUT
        sizes = {int(k): v for k, v in sut["batch_sizes"].items()}
        batches = sum(sizes.values())
        avg = sum(k * v for k, v in sizes.items()) / batches if batches else None
    else:
        avg = server.get("average_batch") if server else None
    request_ms = server.get("request_ms") if server else None
    return PathFigures(
        path=path,
        best_qps=result.best_qps,
        lowest_invalid_qps=result.lowest_invalid_qps,
        latency_at_best_ms=latency,
        mean_latency_ms=mean,
        average_batch=avg,
        queue_share=server.get("queue_share") if server else None,
        compute_share=server.get("compute_share") if server else None,
        server_request_ms=request_ms,
        overhead_ms=mean - request_ms if mean is not None and request_ms is not None else None,
        failed_requests=sut.get("queries_failed") if "endpoint" in sut else None,
    )


def render(rows: list[PathFigures], bound: str) -> str:
    from tabulate import tabulate

    def num(value: float | int | None, fmt: str = ".4g") -> str:
        return "-" if value is None else format(value, fmt)

    table = [
        [
            r.path,
            num(r.best_qps, "g"),
            num(r.lowest_invalid_qps, "g"),
            num(r.latency_at_best_ms, ".3g"),
            num(r.mean_latency_ms, ".3g"),
            num(r.average_batch, ".3g"),
            "-" if r.queue_share is None else f"{r.queue_share:.0%}",
            "-" if r.compute_share is None else f"{r.compute_share:.0%}",
            num(r.server_request_ms, ".3g"),
            num(r.overhead_ms, ".3g"),
        ]
        for r in rows
    ]
    headers = [
        "path",
        f"highest VALID QPS ({bound})",
        "INVALID at",
        "latency at it ms",
        "mean ms",
        "avg batch",
        "queue",
        "compute",
        "server ms/request",
        "overhead ms/query",
    ]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
