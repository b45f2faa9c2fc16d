"""Cost at a latency bound: the highest VALID server load per instance and path, $ per
million inferences there beside offline, in `bench compare` and `bench report`."""

from pathlib import Path

import pytest

from bench.analysis.compare import compare, render
from bench.analysis.prices import load_catalogue
from bench.analysis.pricing import Pricing
from bench.analysis.report import build
from bench.run.store import new_record
from bench.run.validity import validity_flags
from bench.schema.record import (
    Environment,
    InstanceFacts,
    Outcome,
    RunRecord,
    ScenarioFacts,
    Throughput,
)
from bench.schema.spec import RunSpec

CAT = load_catalogue()


def served(
    instance: str, gpu: str, qps: float, valid: bool, p99: float, endpoint: str | None = None
) -> RunRecord:
    spec = RunSpec(
        workload="bert",
        device="cuda:0",
        scenario="server",
        target_qps=qps,
        latency_bound_ms=15.0,
        iters=None,
        duration_s=60.0,
        endpoint=endpoint,
    )
    return _record(spec, instance, gpu, qps * 0.99, valid, p99)


def offline(instance: str, gpu: str, sps: float, valid: bool = True) -> RunRecord:
    spec = RunSpec(
        workload="bert", device="cuda:0", scenario="offline", iters=None, duration_s=60.0
    )
    return _record(spec, instance, gpu, sps, valid, None)


def _record(spec, instance, gpu, sps, valid, p99) -> RunRecord:
    """A record as a LoadGen run writes it: LoadGen's own keys in ``scenario.result``."""
    env = Environment(framework={"device_name": gpu}, instance=InstanceFacts(instance))
    r = new_record(spec, env)
    r.outcome = Outcome(status="ok", message=None)
    r.throughput = Throughput(samples_per_s=sps, iters_per_s=sps)
    values = {
        "effective_scenario": "Server" if spec.scenario == "server" else "Offline",
        "effective_target_latency_percentile": spec.latency_percentile / 100,
        "result_validity": "VALID" if valid else "INVALID",
    }
    if p99 is not None:
        values["result_99.00_percentile_latency_ns"] = p99 * 1e6
    reasons = [] if valid else ["latency bound not met"]
    r.scenario = ScenarioFacts(
        name=spec.scenario,
        timing="loadgen",
        result={"valid": valid, "invalid_reasons": reasons, "loadgen": {"values": values}},
    )
    r.validity.flags = validity_flags(r)
    return r


def runs():
    records = [
        served("g4dn.xlarge", "Tesla T4", 100, True, 9.0),
        served("g4dn.xlarge", "Tesla T4", 200, True, 14.0),
        served("g4dn.xlarge", "Tesla T4", 300, False, 40.0),
        served("g5.xlarge", "NVIDIA A10G", 200, True, 8.0),
        served("g5.xlarge", "NVIDIA A10G", 400, True, 13.5),
        served("g5.xlarge", "NVIDIA A10G", 500, False, 22.0),
        offline("g4dn.xlarge", "Tesla T4", 350.0),
    ]
    return [(Path(f"{r.run_id}.json"), r) for r in records]


def test_highest_valid_load_and_its_cost_per_instance():
    c = compare(runs(), Pricing(CAT))
    ((key, rows),) = c.serving.items()
    assert key == ("bert", 128, 15.0, 99.0)
    by = {r.instance: r for r in rows}
    t4, a10g = by["g4dn.xlarge"], by["g5.xlarge"]
    assert (t4.best_qps, t4.latency_at_best_ms, t4.points) == (200, 14.0, 3)
    assert (a10g.best_qps, a10g.points) == (400, 3)
    t4_price = CAT["g4dn.xlarge"].price_per_hour_usd
    a10g_price = CAT["g5.xlarge"].price_per_hour_usd
    assert t4.usd_per_million_at_bound == pytest.approx(t4_price * 1e6 / (200 * 3600))
    assert a10g.usd_per_million_at_bound == pytest.approx(a10g_price * 1e6 / (400 * 3600))
    assert t4.offline_samples_per_s == 350.0
    assert t4.offline_usd_per_million == pytest.approx(t4_price * 1e6 / (350 * 3600))
    assert a10g.offline_samples_per_s is None
    assert t4.curve == [(100, 9.0, True), (200, 14.0, True), (300, 40.0, False)]
    # sorted cheapest first at the bound
    cheaper = min((t4, a10g), key=lambda r: r.usd_per_million_at_bound)
    assert rows[0] is cheaper


def test_compare_and_report_show_the_cost_at_the_bound(tmp_path):
    c = compare(runs(), Pricing(CAT))
    text = render(c)
    assert "## Cost at a latency bound (LoadGen server scenario)" in text
    assert "bert seq 128: $ per 1M inferences at p99 <= 15 ms: cheapest is" in text
    assert "cheaper than the next" in text
    paths = build(c, tmp_path)
    md = paths["md"].read_text()
    # the decision table first, its serving row naming the cheapest instance at the bound
    cheapest = c.serving[("bert", 128, 15.0, 99.0)][0].instance
    (row,) = [line for line in md.splitlines() if line.startswith("| bert serve seq 128 ")]
    assert row.split("|")[3].strip().startswith(f"{cheapest} · torch · fp32")
    assert md.index("## Which instance and path") < md.index("## bert serve seq 128 at p99")
    (curve,) = tmp_path.glob("serving_*.png")
    assert curve.stat().st_size > 1000


def test_an_invalid_run_is_flagged_never_priced_nor_ranked_best():
    # the cheapest-looking run (most samples/s) is INVALID: it is flagged with LoadGen's
    # reasons, shown as INVALID, and the best is the valid one
    fast = offline("g5.xlarge", "NVIDIA A10G", 9000.0, valid=False)
    slow = offline("g5.xlarge", "NVIDIA A10G", 300.0)
    (flag,) = fast.validity.flags
    assert flag.code == "loadgen_invalid"
    assert flag.message == "LoadGen judged the run INVALID: latency bound not met"
    c = compare([(Path("a.json"), fast), (Path("b.json"), slow)], Pricing(CAT))
    (rows,) = c.groups.values()
    assert [r.record for r in rows] == [slow, fast]
    assert rows[1].usd_per_million is None
    text = render(c)
    best_line = next(line for line in text.splitlines() if line.startswith("| best"))
    assert "| 300 " in best_line
    assert any(line.startswith("| INVALID") for line in text.splitlines())


def test_an_invalid_offline_run_is_not_the_offline_figure():
    records = [
        served("g5.xlarge", "NVIDIA A10G", 100, True, 9.0),
        offline("g5.xlarge", "NVIDIA A10G", 9000.0, valid=False),
        offline("g5.xlarge", "NVIDIA A10G", 400.0),
    ]
    c = compare([(Path(f"{r.run_id}.json"), r) for r in records], Pricing(CAT))
    ((_, (row,)),) = c.serving.items()
    assert row.offline_samples_per_s == 400.0


def test_a_valid_load_above_an_invalid_one_is_not_the_best():
    records = [
        served("g5.xlarge", "NVIDIA A10G", 100, True, 9.0),
        served("g5.xlarge", "NVIDIA A10G", 200, False, 20.0),
        served("g5.xlarge", "NVIDIA A10G", 300, True, 14.0),
    ]
    c = compare([(Path(f"{r.run_id}.json"), r) for r in records], Pricing(CAT))
    ((_, (row,)),) = c.serving.items()
    assert (row.best_qps, row.monotone) == (100, False)
    assert "100 (non-monotone)" in render(c)
