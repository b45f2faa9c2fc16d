"""MLPerf LoadGen scenarios through the harness, on the CPU: real LoadGen tests over the
batching SUT, the figures the record takes from LoadGen, its verdicts, and the refusals.

Scenario tests use a server of controlled service time (tests.fakes.SleepWorkload) with
bounds derived from it and wide margins, so they hold on a busy machine; comparisons of
timings (single-stream against the loop, the SLA search against M/D/1) are in
`make bench-serving`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import registry
from bench.run.registry import Entry
from bench.run.runner import prepare
from bench.run.worker import execute
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec, SpecError
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


@pytest.mark.parametrize("points", ["0", "1"])
def test_an_sla_search_of_fewer_than_two_points_is_refused(tmp_path, points):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "sla", "--workload", "null", "--device", "cpu"]
        + ["--latency-bound", "10ms", "--max-points", points, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--max-points must be at least 2" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def lg_values(record: RunRecord) -> dict[str, Any]:
    assert record.scenario is not None and record.scenario.result is not None
    return dict(record.scenario.result["loadgen"]["values"])


def test_a_server_run_records_loadgens_figures(sleeper, capsys):
    # a server of 10 ms per batch at 50 QPS, against a 500 ms bound at p90: LoadGen needs 44
    # queries; the bound is 50 service times, far from anything a busy machine adds
    spec = server(target_qps=50.0, latency_bound_ms=500.0, latency_percentile=90.0)
    record = execute(spec, progress=True, telemetry_interval_s=None)
    assert record.ok, record.outcome
    assert record.loadgen_valid is True, record.scenario
    assert record.scenario is not None and record.scenario.timing == "loadgen"
    assert record.scenario.settings["target_qps"] == 50.0
    assert record.spec.batch_shapes == "bucketed"  # eager: no static shapes needed
    values = lg_values(record)
    # the record's latency and throughput are LoadGen's, not the SUT's own timings
    assert record.latency is not None and record.latencies_ms == []
    assert record.latency.p99_ms == values["result_99.00_percentile_latency_ns"] / 1e6
    assert record.latency.p50_ms == values["result_50.00_percentile_latency_ns"] / 1e6
    assert record.latency.count == values["result_query_count"]
    assert record.samples_per_s == values["result_completed_samples_per_sec"]
    # every query's latency includes at least one service time
    assert record.latency.min_ms >= SERVICE_S * 1000
    # the SUT's own timings, as a named breakdown
    sut = record.scenario.result["sut"]  # type: ignore[index]
    assert sut["batch_compute_ms"]["p50"] >= SERVICE_S * 1000
    assert sut["queue_wait_ms"]["count"] == values["result_query_count"]
    assert sut["queue_wait_ms"]["mean"] >= 0
    assert not [f for f in record.validity.flags if f.code == "loadgen_invalid"]
    err = capsys.readouterr().err
    # said before the run: at least max(1 s, 44 queries / 50 QPS); and after: the verdict
    assert (
        "LoadGen Server: expect at least 1 s: max(min duration 1 s, min queries 44 / 50 QPS "
        "= 0.88 s)" in err
    )
    assert "LoadGen: VALID" in err


def test_a_server_far_beyond_capacity_is_invalid_and_flagged(sleeper):
    # capacity 1 / SERVICE_S = 100 QPS with batches of one; ten times that cannot hold 10 ms.
    # At p90 LoadGen needs 44 queries: 0.05 s at 1000 QPS asks for 50, served in 0.5 s (at
    # p99 it would need 459, and 1 s at 1000 QPS takes the server 10 s)
    few_queries: dict[str, Any] = dict(latency_percentile=90.0, duration_s=0.05)
    record = run(server(target_qps=1000.0, latency_bound_ms=10.0, max_batch=1, **few_queries))
    assert record.ok, record.outcome
    assert record.loadgen_valid is False
    assert record.timing is not None and record.timing.measured_samples >= 44
    assert record.scenario is not None and record.scenario.result is not None
    reasons = record.scenario.result["invalid_reasons"]
    assert reasons[0].startswith("latency bound not met: p90 ")
    (flag,) = [f for f in record.validity.flags if f.code == "loadgen_invalid"]
    assert flag.message == "LoadGen judged the run INVALID: " + "; ".join(reasons)


def test_offline_with_default_settings_is_valid(sleeper, capsys):
    # no target QPS: a probe measures the throughput and LoadGen is told to expect more, so
    # its one query lasts at least the minimum duration
    spec = server(scenario="offline", target_qps=None, latency_bound_ms=None, max_batch=8)
    record = execute(spec, progress=True, telemetry_interval_s=None)
    assert record.ok and record.loadgen_valid is True, record.scenario
    values = lg_values(record)
    assert record.samples_per_s == values["result_samples_per_second"]
    assert record.scenario is not None
    probed = record.scenario.settings["probed_target_qps"]
    # 8 samples per 10 ms batch at most: the probe (x1.5) cannot exceed 1.5 x 800 per second
    assert isinstance(probed, float) and 0 < probed <= 1.5 * 8 / SERVICE_S
    assert values["effective_target_qps"] == pytest.approx(probed, rel=1e-5)  # 6 digits
    assert "LoadGen Offline: expect at least 1 s: min duration 1 s" in capsys.readouterr().err


def test_offline_with_a_query_count_instead_of_a_duration_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--workload", "null", "--device", "cpu"]
        + ["--scenario", "offline", "--iters", "5", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "sized by its minimum duration" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_single_and_multi_stream_runs(sleeper):
    # a minimum query count, not a duration: 100 queries of at least 10 ms each, however
    # slow the machine (early stopping at p90 needs 64 in single-stream)
    streams: dict[str, Any] = dict(
        iters=100, duration_s=None, target_qps=None, latency_percentile=90.0
    )
    single = run(server(scenario="single-stream", latency_bound_ms=10.0, **streams))
    assert single.ok and single.loadgen_valid is True, single.scenario
    assert single.samples_per_s == lg_values(single)["result_qps_with_loadgen_overhead"]
    assert single.latency is not None and single.latency.p90_ms >= SERVICE_S * 1000
    multi = run(server(scenario="multi-stream", max_batch=4, latency_bound_ms=10.0, **streams))
    assert multi.ok, multi.outcome
    assert multi.scenario is not None and multi.scenario.result is not None
    assert multi.scenario.result["sut"]["batch_sizes"] == {
        "4": multi.scenario.result["sut"]["batches"]
    }
    # MultiStream's latency is per query
    per_query = lg_values(multi)["result_99.00_percentile_per_query_latency_ns"]
    assert multi.latency is not None and multi.latency.p99_ms == per_query / 1e6


def test_cli_null_server_at_200_qps_records_loadgens_p99(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--workload", "null", "--device", "cpu"]
        + ["--scenario", "server", "--target-qps", "200", "--latency-bound", "10ms"]
        + ["--duration", "1", "--out", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    record_file = next(tmp_path.glob("*.json"))
    data = json.loads(record_file.read_text())
    assert data["scenario"]["name"] == "server"
    logs = tmp_path / data["scenario"]["artifacts"]
    assert (logs / "mlperf_log_detail.txt").is_file()
    # the record's p99 is the one in LoadGen's own summary (whole nanoseconds)
    summary = (logs / "mlperf_log_summary.txt").read_text()
    p99_ns = next(
        int(line.split(":")[1]) for line in summary.splitlines() if "99.00 percentile" in line
    )
    assert data["latency"]["p99_ms"] == p99_ns / 1e6


def test_prepare_accepts_a_server_spec():
    assert prepare(server(), gpus=[]).scenario == "server"


def test_batch_shapes_follow_the_execution_mode():
    assert server().batch_shapes == "bucketed"
    assert server(batch_shapes="fixed").batch_shapes == "fixed"
    # the loop runs one shape: nothing to bucket
    assert RunSpec(workload="null", device="cpu").batch_shapes == "fixed"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_bert_server_is_valid_at_a_low_load_and_invalid_far_beyond(backend):
    """Full-size BERT-base at sequence length 16 on the CPU. Its service time is measured
    first (full batches in the loop), and the loads and bounds derive from it: a quarter of
    that capacity against 20 batch times, and 20 times it against a tenth of one (for as few
    queries as LoadGen accepts: every one is over that bound, and the server works through
    its queue before the run ends)."""
    bert: dict[str, Any] = dict(seq_len=16, backend=backend, latency_percentile=90.0)
    probe = run(RunSpec(workload="bert", device="cpu", batch=8, iters=5, warmup=1, **bert))
    assert probe.ok and probe.latency is not None, probe.outcome
    batch_ms = probe.latency.p50_ms
    capacity = 8 / (batch_ms / 1000)
    low_qps = round(capacity / 4, 2)
    low = run(
        server(
            "bert",
            target_qps=low_qps,
            latency_bound_ms=20 * batch_ms,
            duration_s=1.0,
            max_batch=8,
            **bert,
        )
    )
    assert low.ok, low.outcome
    assert low.loadgen_valid is True, (batch_ms, low.scenario)
    high = run(
        server(
            "bert",
            target_qps=round(capacity * 20, 1),
            latency_bound_ms=batch_ms / 10,
            duration_s=0.05,
            max_batch=8,
            **bert,
        )
    )
    assert high.ok, high.outcome
    assert high.loadgen_valid is False


def test_server_runs_ask_for_enough_queries_for_early_stopping(sleeper):
    from bench.run.loadgen import early_stopping_min_queries

    # LoadGen accepts a percentile only from this many queries on, all under the bound
    assert early_stopping_min_queries(90.0) == 44
    assert early_stopping_min_queries(99.0) == 459
    record = run(
        server(target_qps=200.0, latency_percentile=90.0, latency_bound_ms=500.0, duration_s=0.05)
    )
    assert record.loadgen_valid is True, record.scenario  # 0.05 s alone would be 10 queries
    assert record.timing is not None and record.timing.measured_samples >= 44
