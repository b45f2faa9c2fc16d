import pytest

from bench.run import registry
from bench.run.registry import Entry
from bench.run.spec import RunSpec
from bench.run.worker import execute


@pytest.fixture
def fake_registry(monkeypatch):
    entries = dict(registry.REGISTRY)
    entries[("null", "torch")] = Entry("tests.fakes:CountingWorkload")
    entries[("ssd", "torch")] = Entry("tests.fakes:OomWorkload")
    entries[("bert", "torch")] = Entry("tests.fakes:FailingWorkload")
    monkeypatch.setattr(registry, "REGISTRY", entries)


def test_execute_ok_record(fake_registry):
    spec = RunSpec(workload="null", mode="train", batch=4, device="cpu", warmup=1, iters=5)
    record = execute(spec, progress=False)
    assert record["outcome"] == {"status": "ok", "message": None}
    assert record["spec"] == spec.to_dict()
    assert len(record["latencies_ms"]) == 5
    assert record["timing"]["measured_samples"] == 20
    tput = record["throughput"]
    assert tput["samples_per_s"] == pytest.approx(20 / record["timing"]["window_s"])
    # 1 GFLOP forward per sample, x3 for training
    assert tput["tflops_per_s"] == pytest.approx(tput["samples_per_s"] * 3e9 / 1e12)
    assert record["workload"]["flops_factor"] == 3
    assert record["environment"]["python"]
    assert record["telemetry"]["available"] is False and record["telemetry"]["reason"]


def test_execute_records_oom(fake_registry):
    record = execute(RunSpec(workload="ssd", device="cpu", warmup=1, iters=3), progress=False)
    assert record["outcome"]["status"] == "oom"
    assert "out of memory" in record["outcome"]["message"]
    assert record["throughput"] is None and record["latencies_ms"] == []


def test_execute_records_errors_on_one_line(fake_registry):
    record = execute(RunSpec(workload="bert", device="cpu"), progress=False)
    assert record["outcome"]["status"] == "error"
    assert record["outcome"]["message"] == "RuntimeError: broken model"
    assert "Traceback" in record["outcome"]["traceback"]
