"""`make overhead` on the null workload: every loop runs, rounds interleave, ratios come out."""

from bench.run.overhead import interleaved_rounds
from bench.schema.spec import RunSpec


def test_interleaved_rounds_on_the_null_workload():
    spec = RunSpec(workload="null", device="cpu", warmup=1)
    out = interleaved_rounds(spec, rounds=3, iters=200, telemetry_interval_s=0.05)
    assert set(out["s_per_iter"]) == {"bare", "harness", "telemetry"}
    assert all(len(v) == 3 for v in out["rounds_s"].values())
    assert all(v > 0 for v in out["s_per_iter"].values())
    assert out["overhead_ratio"] == out["s_per_iter"]["harness"] / out["s_per_iter"]["bare"]
    assert out["telemetry_interval_s"] == 0.05
    assert out["spec"] == spec.to_dict()


def test_sut_rounds_compare_single_stream_queries_with_loop_steps():
    from bench.run.overhead import sut_rounds

    out = sut_rounds(RunSpec(workload="null", device="cpu", warmup=1), rounds=2, duration_s=0.3)
    assert len(out["rounds_s"]["loop"]) == len(out["rounds_s"]["single_stream"]) == 2
    # a LoadGen query through the batcher thread costs more than an empty loop step
    assert out["single_stream_s_per_query"] > out["loop_s_per_step"] > 0
    assert out["sut_us_per_query"] > 0 and out["sut_ratio"] > 1


def test_pipelined_rounds_use_the_queued_loops(monkeypatch):
    from bench.run import overhead

    calls = []
    real_bare, real_harness = overhead.bare_pipelined_loop, overhead.harness_pipelined_loop
    monkeypatch.setattr(
        overhead,
        "bare_pipelined_loop",
        lambda *a: calls.append("bare") or real_bare(*a),
    )
    monkeypatch.setattr(
        overhead,
        "harness_pipelined_loop",
        lambda *a: calls.append("harness") or real_harness(*a),
    )
    spec = RunSpec(workload="null", device="cpu", warmup=1, timing="pipelined")
    out = interleaved_rounds(spec, rounds=2, iters=100)
    assert sorted(calls) == ["bare", "bare", "harness", "harness"]
    assert out["overhead_ratio"] == out["s_per_iter"]["harness"] / out["s_per_iter"]["bare"]


def test_fast_specs_are_the_fast_suite_modes():
    from bench.run.overhead import fast_specs

    cpu = fast_specs(RunSpec(workload="bert", device="cpu"))
    assert [(s.compile, s.cuda_graphs, s.timing) for s in cpu] == [
        ("default", False, "synchronized"),
        ("default", False, "pipelined"),
    ]
    gpu = fast_specs(RunSpec(workload="bert", device="cuda:0"))
    assert [(s.compile, s.cuda_graphs, s.timing) for s in gpu] == [
        ("default", True, "synchronized"),
        ("default", True, "pipelined"),
    ]
