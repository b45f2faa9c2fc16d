"""The MXNet path under MLPerf LoadGen: a server run over the batching SUT, on the CPU."""

from typing import Any

from bench.run.worker import execute
from bench.schema.spec import RunSpec


def test_bert_server_on_mxnet_is_valid_at_a_low_load():
    """Full-size BERT-base at sequence length 16. Its service time is measured first (full
    batches in the loop), and the load and bound derive from it, so that a busy machine
    slows both alike: a quarter of that capacity against 20 batch times (as the PyTorch
    path's server test in tests/test_loadgen_scenarios.py)."""
    bert: dict[str, Any] = dict(workload="bert", backend="mxnet", device="cpu", seq_len=16)
    probe = execute(
        RunSpec(**bert, batch=8, warmup=1, iters=5), progress=False, telemetry_interval_s=None
    )
    assert probe.ok and probe.latency is not None, probe.outcome
    batch_ms = probe.latency.p50_ms
    capacity = 8 / (batch_ms / 1000)
    spec = RunSpec(
        **bert,
        scenario="server",
        target_qps=round(capacity / 4, 2),
        latency_bound_ms=20 * batch_ms,
        latency_percentile=90.0,
        max_batch=8,
        batch_shapes="bucketed",
        sample_count=16,
        warmup=2,
        iters=None,
        duration_s=1.0,
    )
    record = execute(spec, progress=False, telemetry_interval_s=None)
    assert record.ok, record.outcome
    assert record.loadgen_valid is True, (batch_ms, record.scenario)
    assert record.scenario is not None and record.scenario.result is not None
    assert record.scenario.result["sut"]["queries_completed"] == record.timing.measured_samples
