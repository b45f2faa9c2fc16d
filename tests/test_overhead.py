"""`make overhead` on the null workload: every loop runs, rounds interleave, ratios come out."""

from bench.run.overhead import interleaved_rounds
from bench.run.spec import RunSpec


def test_interleaved_rounds_on_the_null_workload():
    spec = RunSpec(workload="null", device="cpu", warmup=1)
    out = interleaved_rounds(spec, rounds=3, iters=200, telemetry_interval_s=0.05)
    assert set(out["s_per_iter"]) == {"bare", "harness", "telemetry"}
    assert all(len(v) == 3 for v in out["rounds_s"].values())
    assert all(v > 0 for v in out["s_per_iter"].values())
    assert out["overhead_ratio"] == out["s_per_iter"]["harness"] / out["s_per_iter"]["bare"]
    assert out["telemetry_interval_s"] == 0.05
    assert out["spec"] == spec.to_dict()
