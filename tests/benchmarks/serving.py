"""`make bench-serving`: the serving figures' timing comparisons, measured and reported (not
asserted: on a shared machine they vary with its load).

- the SLA search over a server of known service time (tests.fakes.SleepWorkload, batches of
  one) against the M/D/1 queue's analytic capacity at the same bound;
- LoadGen single-stream latency of BERT (seq 16, batch 1) against the fixed loop's, measured
  before and after it;
- the batching SUT's own cost per query (bench.run.overhead.sut_rounds) on the null workload.

Usage: python -m tests.benchmarks.serving [--out out/bench-serving.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from bench.run import registry, sla
from bench.run.overhead import sut_rounds
from bench.run.registry import Entry
from bench.run.worker import execute
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec
from tests.fakes import SERVICE_S


def md1_sojourn_cdf(t: float, rate: float, service: float) -> float:
    """P(sojourn <= t) in an M/D/1 queue (Erlang's formula for the waiting time W, then
    sojourn = W + service)."""
    w = t - service
    if w < 0:
        return 0.0
    rho = rate * service
    total = sum(
        (rate * (k * service - w)) ** k / math.factorial(k) * math.exp(-rate * (k * service - w))
        for k in range(int(w // service) + 1)
    )
    return (1 - rho) * total


def md1_max_rate(bound: float, percentile: float, service: float) -> float:
    """The highest arrival rate whose sojourn-time percentile stays within the bound."""
    lo, hi = 0.0, 1 / service
    for _ in range(60):
        mid = (lo + hi) / 2
        ok = md1_sojourn_cdf(bound, mid, service) >= percentile / 100
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo


def run(spec: RunSpec) -> RunRecord:
    return execute(spec, progress=False, telemetry_interval_s=None)


def sla_against_md1() -> dict[str, Any]:
    bound_s, percentile = 0.040, 90.0
    entries = dict(registry.REGISTRY)
    entries[("null", "torch")] = Entry("tests.fakes:SleepWorkload")
    saved, registry.REGISTRY = registry.REGISTRY, entries
    try:
        spec = RunSpec(
            workload="null",
            device="cpu",
            scenario="server",
            warmup=2,
            iters=None,
            duration_s=5.0,
            target_qps=1.0,
            latency_bound_ms=bound_s * 1000,
            latency_percentile=percentile,
            max_batch=1,
            batch_timeout_ms=0.0,
            sample_count=16,
        )
        result = sla.search(spec, run, start_qps=20.0, tolerance=0.05)
    finally:
        registry.REGISTRY = saved
    expected = md1_max_rate(bound_s, percentile, SERVICE_S)
    return {
        "md1_capacity_qps": expected,
        "search_best_qps": result.best_qps,
        "search_lowest_invalid_qps": result.lowest_invalid_qps,
        "ratio": result.best_qps / expected if result.best_qps else None,
        "runs": len(result.points),
        "answer": sla.answer(result),
    }


def single_stream_against_loop() -> dict[str, Any]:
    bert: dict[str, Any] = dict(workload="bert", seq_len=16, device="cpu", batch=1, warmup=5)
    before = run(RunSpec(**bert, iters=60))
    assert before.latency is not None, before.outcome
    single = run(
        RunSpec(
            **bert,
            scenario="single-stream",
            iters=None,
            duration_s=2.0,
            latency_bound_ms=before.latency.p50_ms,
            sample_count=16,
        )
    )
    after = run(RunSpec(**bert, iters=60))
    assert single.latency is not None and after.latency is not None
    return {
        "loop_p50_ms_before": before.latency.p50_ms,
        "single_stream_p50_ms": single.latency.p50_ms,
        "loop_p50_ms_after": after.latency.p50_ms,
        "ratio_to_loop_mean": single.latency.p50_ms
        / ((before.latency.p50_ms + after.latency.p50_ms) / 2),
    }


def sut_overhead() -> dict[str, Any]:
    spec = RunSpec(workload="null", device="cpu", warmup=5)
    out = sut_rounds(spec, rounds=3, duration_s=1.0)
    return {k: out[k] for k in ("sut_us_per_query", "sut_ratio", "loop_s_per_step")}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.serving")
    parser.add_argument("--out", type=Path, default=Path("out/bench-serving.json"))
    args = parser.parse_args()
    report = {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "sla_against_md1": sla_against_md1(),
        "single_stream_against_loop": single_stream_against_loop(),
        "sut_overhead": sut_overhead(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
