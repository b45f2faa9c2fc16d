"""The MXNet path under MLPerf LoadGen: a server run over the batching SUT, on the CPU."""

from bench.run.worker import execute
from bench.schema.spec import RunSpec


def test_bert_server_on_mxnet_is_valid_at_a_low_load():
    spec = RunSpec(
        workload="bert",
        backend="mxnet",
        device="cpu",
        seq_len=16,
        scenario="server",
        target_qps=10.0,
        latency_bound_ms=1000.0,
        latency_percentile=90.0,
        max_batch=8,
        batch_shapes="bucketed",
        sample_count=16,
        warmup=2,
        iters=None,
        duration_s=6.0,
    )
    record = execute(spec, progress=False, telemetry_interval_s=None)
    assert record.ok, record.outcome
    assert record.loadgen_valid is True, record.scenario
    assert record.scenario is not None and record.scenario.result is not None
    assert record.scenario.result["sut"]["queries_completed"] == record.timing.measured_samples
