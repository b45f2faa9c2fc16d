"""MLPerf LoadGen scenarios through the harness, on the CPU: real LoadGen tests over the
batching SUT, their verdicts, the SLA search against an analytic answer, and the refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import registry, sla
from bench.run.record import RunRecord
from bench.run.registry import Entry
from bench.run.runner import prepare
from bench.run.spec import RunSpec, SpecError
from bench.run.worker import execute
from tests.fakes import SERVICE_S

ROOT = Path(__file__).resolve().parent.parent


def server(workload: str = "null", **kw: object) -> RunSpec:
    fields: dict[str, object] = {
        "workload": workload,
        "device": "cpu",
        "scenario": "server",
        "warmup": 2,
        "iters": None,
        "duration_s": 1.0,
        "latency_bound_ms": 10.0,
        "target_qps": 50.0,
        "sample_count": 16,
        **kw,
    }
    return RunSpec(**fields)  # type: ignore[arg-type]


def run(spec: RunSpec) -> RunRecord:
    return execute(spec, progress=False, telemetry_interval_s=None)


@pytest.fixture
def sleeper(monkeypatch: pytest.MonkeyPatch) -> None:
    """The null workload replaced by one of known capacity (SERVICE_S per batch)."""
    entries = dict(registry.REGISTRY)
    entries[("null", "torch")] = Entry("tests.fakes:SleepWorkload")
    monkeypatch.setattr(registry, "REGISTRY", entries)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"target_qps": 0.0}, "target_qps must be positive"),
        ({"target_qps": -5.0}, "target_qps must be positive"),
        ({"latency_bound_ms": 0.0}, "latency_bound_ms must be positive"),
        ({"max_batch": 0}, "max_batch must be between 1"),
        ({"latency_percentile": 100.0}, "latency_percentile must be in (0, 100)"),
        ({"latency_percentile": 0.0}, "latency_percentile must be in (0, 100)"),
        ({"mode": "train"}, "training has no LoadGen scenario"),
        ({"target_qps": None}, "needs a target QPS and a latency bound"),
    ],
)
def test_bad_scenario_settings_are_refused(fields, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        server(**fields)


def test_bad_settings_exit_2_on_the_command_line(tmp_path):
    base = [sys.executable, "-m", "bench", "run", "--workload", "null", "--device", "cpu"]
    for extra in (
        ["--scenario", "server", "--target-qps", "0", "--latency-bound", "10ms"],
        ["--scenario", "server", "--target-qps", "10", "--latency-bound", "fast"],
        ["--scenario", "offline", "--mode", "train"],
        [
            "--scenario",
            "server",
            "--target-qps",
            "10",
            "--latency-bound",
            "10ms",
            "--max-batch",
            "0",
        ],
    ):
        proc = subprocess.run(
            [*base, *extra, "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
        )
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_null_server_is_valid_at_a_low_load():
    # 1000 queries in the second: enough for LoadGen's early-stopping estimate of p99
    record = run(server(target_qps=1000.0))
    assert record.ok, record.outcome
    assert record.loadgen_valid is True, record.scenario
    assert record.scenario is not None and record.scenario.timing == "loadgen"
    assert record.scenario.settings["target_qps"] == 1000.0
    assert record.latency is not None and record.latency.count == len(record.latencies_ms)
    assert record.timing is not None and record.timing.measured_samples >= 900


def test_a_server_far_beyond_capacity_is_invalid(sleeper):
    # capacity 1 / SERVICE_S = 100 QPS with batches of one; ten times that cannot hold 10 ms
    record = run(server(target_qps=1000.0, latency_bound_ms=10.0))
    assert record.ok, record.outcome
    assert record.loadgen_valid is False
    assert record.scenario is not None and record.scenario.result is not None
    assert record.scenario.result["invalid_reasons"]


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


def test_md1_reference_values():
    # a 40 ms bound with 10 ms service: about 69 QPS at p90, 46 at p99, of 100 QPS capacity
    assert md1_sojourn_cdf(SERVICE_S / 2, 50.0, SERVICE_S) == 0.0
    assert md1_max_rate(0.040, 90, 0.010) == pytest.approx(69.4, abs=0.1)
    assert md1_max_rate(0.040, 99, 0.010) == pytest.approx(46.3, abs=0.1)
    # no waiting at a vanishing load: the sojourn is the service time
    assert md1_sojourn_cdf(0.0101, 1e-9, 0.010) == pytest.approx(1.0)


@pytest.mark.slow
def test_the_search_converges_on_the_analytic_capacity(sleeper):
    bound_s, percentile = 0.040, 90.0
    expected = md1_max_rate(bound_s, percentile, SERVICE_S)
    spec = server(
        latency_bound_ms=bound_s * 1000,
        latency_percentile=percentile,
        duration_s=5.0,  # enough queries that early stopping holds despite a CPU hiccup
        max_batch=1,
        batch_timeout_ms=0.0,
    )
    result = sla.search(spec, run, start_qps=20.0, tolerance=0.1)
    assert result.converged, result.points
    assert result.best_qps is not None
    # within 25 %: LoadGen's arrivals are a finite sample, and sleep() and the batcher add
    # a little service time
    assert result.best_qps == pytest.approx(expected, rel=0.25), (expected, result.points)
    assert [p.valid for p in result.points if p.target_qps <= result.best_qps] == [
        True for p in result.points if p.target_qps <= result.best_qps
    ]


def test_offline_and_single_stream_runs():
    # LoadGen issues expected QPS x min duration samples at once: they must take >= 1 s
    offline = run(
        server(scenario="offline", target_qps=300_000.0, latency_bound_ms=None, max_batch=64)
    )
    assert offline.ok and offline.loadgen_valid is True, offline.scenario
    assert offline.throughput is not None and offline.throughput.samples_per_s > 0
    # the streams' expected latency sizes LoadGen's query count for the minimum duration:
    # the null workload's real one (about 12 us per query here)
    single = run(server(scenario="single-stream", target_qps=None, latency_bound_ms=0.012))
    assert single.ok and single.loadgen_valid is True, single.scenario
    multi = run(
        server(scenario="multi-stream", target_qps=None, max_batch=4, latency_bound_ms=0.035)
    )
    assert multi.ok and multi.loadgen_valid is True, multi.scenario
    assert multi.scenario is not None and multi.scenario.result is not None
    assert multi.scenario.result["sut"]["batch_sizes"] == {
        "4": multi.scenario.result["sut"]["batches"]
    }


def test_cli_server_run_keeps_loadgens_logs_beside_the_record(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--workload", "null", "--device", "cpu"]
        + ["--scenario", "server", "--target-qps", "1000", "--latency-bound", "10ms"]
        + ["--duration", "1", "--out", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    record_file = next(tmp_path.glob("*.json"))
    data = json.loads(record_file.read_text())
    assert data["scenario"]["name"] == "server" and data["scenario"]["result"]["valid"] is True
    logs = tmp_path / data["scenario"]["artifacts"]
    assert (logs / "mlperf_log_summary.txt").is_file()
    assert (logs / "mlperf_log_detail.txt").is_file()


def test_prepare_accepts_a_server_spec():
    assert prepare(server(), gpus=[]).scenario == "server"


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_bert_server_is_valid_at_a_low_load_and_invalid_far_beyond(backend):
    """Full-size BERT-base at sequence length 16 on the CPU (about 10-20 ms a query)."""
    # bucketed: a lone query runs as a batch of one, not padded to eight
    bert = dict(
        seq_len=16,
        backend=backend,
        latency_percentile=90.0,
        max_batch=8,
        batch_shapes="bucketed",
    )
    # 60 queries: enough for LoadGen's early-stopping estimate of p90
    low = run(server("bert", target_qps=10.0, latency_bound_ms=1000.0, duration_s=6.0, **bert))
    assert low.ok, low.outcome
    assert low.loadgen_valid is True, low.scenario
    # ten times its capacity for half a second: 200 queries LoadGen waits for, about 2 s
    high = run(server("bert", target_qps=400.0, latency_bound_ms=50.0, duration_s=0.5, **bert))
    assert high.ok, high.outcome
    assert high.loadgen_valid is False


def test_single_stream_latency_agrees_with_the_loops_batch_1_latency():
    """The same model, one sample at a time: LoadGen's single-stream against the fixed loop
    (the SUT adds microseconds to a query of milliseconds)."""
    bert = dict(workload="bert", seq_len=16, device="cpu", batch=1, warmup=5)
    loop = run(RunSpec(**bert, iters=60))
    assert loop.latency is not None
    single = run(
        RunSpec(
            **bert,
            scenario="single-stream",
            iters=None,
            duration_s=2.0,
            latency_bound_ms=loop.latency.p50_ms,
            sample_count=16,
        )
    )
    assert single.ok and single.latency is not None, single.outcome
    # the loop again after the queries: a shared 2-core machine drifts between runs, and the
    # queries must agree with the loop measured around them
    again = run(RunSpec(**bert, iters=60))
    assert again.latency is not None
    low, high = sorted((loop.latency.p50_ms, again.latency.p50_ms))
    assert low * 0.75 <= single.latency.p50_ms <= high * 1.25, (low, single.latency.p50_ms, high)


def test_server_runs_ask_for_enough_queries_for_early_stopping():
    from bench.run.loadgen import early_stopping_min_queries

    # LoadGen accepts a percentile only from this many queries on, all under the bound
    assert early_stopping_min_queries(90.0) == 44
    assert early_stopping_min_queries(99.0) == 459
    record = run(server(target_qps=200.0, latency_percentile=90.0, duration_s=0.05))
    assert record.loadgen_valid is True, record.scenario  # 0.05 s alone would be 10 queries
    assert record.timing is not None and record.timing.measured_samples >= 44
