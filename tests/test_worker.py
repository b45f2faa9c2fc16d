"""The worker: one spec in, one typed record out, with exact figures from a fake clock."""

import itertools
import json

import pytest

from bench.run import registry
from bench.run.registry import Entry
from bench.run.worker import execute
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec
from tests.fakes import CountingWorkload


@pytest.fixture
def fake_registry(monkeypatch):
    entries = dict(registry.REGISTRY)
    entries[("null", "torch")] = Entry("tests.fakes:CountingWorkload")
    entries[("ssd", "torch")] = Entry("tests.fakes:OomWorkload")
    entries[("bert", "torch")] = Entry("tests.fakes:FailingWorkload")
    monkeypatch.setattr(registry, "REGISTRY", entries)
    monkeypatch.setitem(registry.WORKLOAD_INFO, "null", "tests.fakes:COUNTING_INFO")


def quarter_second_clock():
    """Each read is 0.25 s after the previous one."""
    ticks = itertools.count()
    return lambda: next(ticks) * 0.25


def test_execute_ok_record_with_exact_figures(fake_registry):
    spec = RunSpec(
        workload="null",
        mode="train",
        batch=4,
        device="cpu",
        warmup=1,
        iters=5,
        timing="synchronized",
    )
    record = execute(spec, progress=False, telemetry_interval_s=None, clock=quarter_second_clock())
    assert record.outcome.status == "ok" and record.outcome.message is None
    assert record.spec == spec
    # clock reads: set-up start and end, warm-up start, first step, window start, then one
    # per step
    assert record.timing is not None
    assert record.timing.warmup_s == 0.25
    assert record.timing.window_s == 1.25
    assert record.timing.measured_samples == 20
    assert record.latencies_ms == [250.0] * 5
    assert record.throughput is not None
    assert record.throughput.samples_per_s == 16.0  # 20 samples in 1.25 s
    assert record.throughput.iters_per_s == 4.0
    # 1 GFLOP forward per sample (declared by COUNTING_INFO), x3 for training
    assert record.throughput.tflops_per_s == pytest.approx(0.048, rel=1e-12)
    assert record.workload is not None and record.workload.flops_factor == 3
    assert record.workload.epoch_samples == 1000
    assert record.workload.implementation == "tests.fakes:CountingWorkload"
    assert record.latency is not None and record.latency.p50_ms == 250.0
    assert record.scenario is not None and record.scenario.name == "loop"
    assert record.environment.python
    assert record.telemetry.available is False
    assert record.telemetry.reason == "telemetry turned off"
    assert [f.code for f in record.validity.flags] == ["few_iterations"]
    assert record.execution.one_off_s == {"setup_s": 0.25, "first_step_s": 0.25}
    assert record.scenario.timing == "synchronized" and record.execution.step_timer is None


def test_training_is_timed_pipelined_by_default(fake_registry):
    spec = RunSpec(workload="null", mode="train", batch=4, device="cpu", warmup=1, iters=5)
    assert spec.timing == "pipelined"
    record = execute(spec, progress=False, telemetry_interval_s=None, clock=quarter_second_clock())
    assert record.outcome.status == "ok"
    assert record.scenario is not None and record.scenario.timing == "pipelined"
    assert record.scenario.timing_reason is None
    # clock reads: set-up (2), warm-up (2), window start, the first marker, one marker per
    # step, and the window's end after the one synchronize
    assert record.timing is not None and record.timing.window_s == 1.75
    assert record.latencies_ms == [250.0] * 5
    assert record.throughput is not None and record.throughput.samples_per_s == 20 / 1.75
    assert record.execution.step_timer == "host_clock"


class WaitingWorkload(CountingWorkload):
    """A step that reads a result back on the host, as GluonCV's SSD loss does."""

    def step_waits_for_device(self) -> str | None:
        return "the loss reads a count on the host"


def test_a_pipelined_run_whose_step_waits_is_recorded_as_synchronized(fake_registry, monkeypatch):
    entries = {**registry.REGISTRY, ("null", "torch"): Entry("tests.test_worker:WaitingWorkload")}
    monkeypatch.setattr(registry, "REGISTRY", entries)
    spec = RunSpec(workload="null", mode="train", batch=4, device="cpu", warmup=1, iters=5)
    record = execute(spec, progress=False, telemetry_interval_s=None, clock=quarter_second_clock())
    assert record.outcome.status == "ok" and record.spec.timing == "pipelined"
    assert record.scenario is not None and record.scenario.timing == "synchronized"
    assert record.scenario.timing_reason == (
        "pipelined asked for, but every step waits: the loss reads a count on the host"
    )
    assert RunRecord.from_dict(record.to_dict()).scenario == record.scenario


def test_inference_counts_the_forward_once(fake_registry):
    spec = RunSpec(workload="null", mode="infer", batch=2, device="cpu", warmup=0, iters=2)
    record = execute(spec, progress=False, telemetry_interval_s=None, clock=quarter_second_clock())
    assert record.throughput is not None and record.throughput.samples_per_s == 8.0  # 4 in 0.5 s
    assert record.throughput.tflops_per_s == pytest.approx(0.008, rel=1e-12)
    assert record.throughput.mfu is not None
    assert record.throughput.mfu.basis == "CPU run: no peak table"


def test_the_worker_writes_its_telemetry_csv_and_checkpoints(fake_registry, tmp_path):
    spec = RunSpec(workload="null", device="cpu", warmup=1, iters=200)
    checkpoint = tmp_path / "partial.json"
    record = execute(
        spec, progress=False, telemetry_interval_s=0.01, out_dir=tmp_path, checkpoint=checkpoint
    )
    assert record.telemetry.timeseries_csv == f"{record.run_id}.telemetry.csv"
    header = (tmp_path / record.telemetry.timeseries_csv).read_text().splitlines()[0]
    assert header == "phase,t_unix,cpu_pct,process_rss_mib"
    # the last checkpoint is the final record
    assert RunRecord.from_dict(json.loads(checkpoint.read_text())) == record


def test_execute_records_oom(fake_registry):
    record = execute(RunSpec(workload="ssd", device="cpu", warmup=1, iters=3), progress=False)
    assert record.outcome.status == "oom"
    assert "out of memory" in (record.outcome.message or "")
    assert record.throughput is None and record.latencies_ms == []


def test_execute_records_errors_on_one_line(fake_registry):
    record = execute(RunSpec(workload="bert", device="cpu"), progress=False)
    assert record.outcome.status == "error"
    assert record.outcome.message == "RuntimeError: broken model"
    assert "Traceback" in (record.outcome.traceback or "")
