"""Grouping, spec matching, pricing and the regression gate of `bench compare`."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.analysis.compare import CompareError, Threshold, compare, group_title, render
from bench.analysis.prices import load_catalogue, local_price
from bench.analysis.pricing import Pricing
from bench.run.store import new_record, write_record
from bench.schema.record import Environment, InstanceFacts, Latency, Outcome, Throughput
from bench.schema.spec import RunSpec
from bench.schema.telemetry import TelemetrySummary

ROOT = Path(__file__).resolve().parent.parent


def run(
    workload="bert",
    mode="infer",
    batch=32,
    backend="torch",
    precision="fp32",
    instance=None,
    gpu="NVIDIA H200",
    sps=1000.0,
    p99=40.0,
    device="cuda:0",
    **spec_kw,
):
    spec = RunSpec(
        workload=workload,
        mode=mode,
        batch=batch,
        backend=backend,
        precision=precision,
        device=device,
        **spec_kw,
    )
    env = Environment(
        framework={"device_name": gpu},
        cpu_model="EPYC",
        instance=InstanceFacts(instance_type=instance),
    )
    r = new_record(spec, env)
    r.outcome = Outcome(status="ok", message=None)
    r.throughput = Throughput(samples_per_s=sps, iters_per_s=sps / batch)
    r.latency = latency(p99)
    r.telemetry = TelemetrySummary(util_gpu_mean_pct=90.0, energy_per_sample_j=0.5)
    return r


def latency(p99: float) -> Latency:
    half = p99 / 2
    return Latency(100, half, half, half, half, p99, half, p99, 0.0, 0.0, 0.0)


def pairs(*records):
    return [(Path(f"{r.run_id}.json"), r) for r in records]


@pytest.fixture
def pricing():
    return Pricing(load_catalogue())


def test_threshold_parsing():
    assert Threshold.parse("throughput:-5%") == Threshold("throughput", -5.0)
    assert Threshold.parse("p99:+10%") == Threshold("p99", 10.0)
    for bad in ("throughput:5%", "p99:-10%", "speed:-5%", "throughput:-5", "p99:+0%"):
        with pytest.raises(CompareError):
            Threshold.parse(bad)
    t = Threshold("throughput", -5.0)
    assert t.violated(0.949) and not t.violated(0.95) and not t.violated(1.2)
    assert Threshold("p99", 10.0).violated(1.11) and not Threshold("p99", 10.0).violated(1.1)


def test_groups_by_work_and_sorts_by_cost(pricing):
    runs = pairs(
        run(instance="p3.2xlarge", gpu="Tesla V100-SXM2-16GB", sps=500.0),
        run(instance="g4dn.xlarge", gpu="Tesla T4", sps=200.0),
        run(instance="g4dn.xlarge", gpu="Tesla T4", batch=8, sps=150.0),
        run(
            workload="ssd",
            mode="train",
            batch=16,
            instance="p3.2xlarge",
            gpu="Tesla V100-SXM2-16GB",
            sps=100.0,
        ),
    )
    c = compare(runs, pricing)
    titles = [group_title(k) for k in c.groups]
    assert titles == [
        "bert infer, batch 32 seq 128",
        "bert infer, batch 8 seq 128",
        "ssd train, batch 16 512x512",
    ]
    first = list(c.groups.values())[0]
    per_million = [r.usd_per_million for r in first]
    assert per_million == sorted(per_million)
    cat = load_catalogue()
    v100 = cat["p3.2xlarge"].price_per_hour_usd
    t4 = cat["g4dn.xlarge"].price_per_hour_usd
    expected = sorted([v100 * 1e6 / (500 * 3600), t4 * 1e6 / (200 * 3600)])
    assert per_million == pytest.approx(expected)
    ssd = list(c.groups.values())[2][0]
    assert ssd.usd_per_epoch == pytest.approx(16_551 / 100 / 3600 * v100)


def test_unpriced_runs_say_why(pricing):
    c = compare(pairs(run(instance=None), run(instance="x9.huge")), pricing)
    reasons = sorted(r.unpriced_reason for r in list(c.groups.values())[0])
    assert reasons == [
        "instance type x9.huge is not in the price catalogue",
        "no instance type recorded and no --price-per-hour given",
    ]
    local = Pricing(load_catalogue(), local=local_price(2.0))
    row = list(compare(pairs(run(sps=100.0)), local).groups.values())[0][0]
    assert row.usd_per_million == pytest.approx(2.0 * 1e6 / 360_000)


def test_price_basis_of_a_multi_gpu_instance():
    cat = load_catalogue()
    whole = Pricing(cat, basis="instance")
    share = Pricing(cat, basis="used")
    r = pairs(run(instance="p3.16xlarge", gpu="Tesla V100-SXM2-16GB", sps=360.0))
    w = list(compare(r, whole).groups.values())[0][0]
    s = list(compare(r, share).groups.values())[0][0]
    full = cat["p3.16xlarge"].price_per_hour_usd
    assert w.price_per_hour_usd == pytest.approx(full)
    assert s.price_per_hour_usd == pytest.approx(full / 8)


def test_gate_matches_like_with_like(pricing):
    base = run(instance="p3.2xlarge", gpu="Tesla V100-SXM2-16GB", sps=500.0, p99=40.0)
    slower = copy.deepcopy(base)
    slower.run_id = "new"
    slower.throughput = Throughput(samples_per_s=470.0, iters_per_s=470.0 / 32)  # -6 %
    slower.latency = latency(43.0)  # +7.5 %
    other_gpu = run(instance="g4dn.xlarge", gpu="Tesla T4", sps=100.0)
    other_work = run(batch=4)
    c = compare(
        pairs(slower, other_gpu, other_work),
        pricing,
        pairs(base),
        [Threshold("throughput", -5.0), Threshold("p99", 10.0)],
    )
    assert c.gated == 1
    assert len(c.regressions) == 1 and "throughput -6.0%" in c.regressions[0]
    assert any("differs in backend, precision or hardware" in u for u in c.unmatched)
    assert any("no baseline run measured the same work" in u for u in c.unmatched)
    row = next(r for rows in c.groups.values() for r in rows if r.run_id == "new")
    assert row.ratios["throughput"] == pytest.approx(0.94)


def test_single_baseline_gives_ratios_across_instances(pricing):
    base = run(instance="p3.2xlarge", gpu="Tesla V100-SXM2-16GB", sps=400.0)
    other = run(instance="g5.xlarge", gpu="NVIDIA A10G", sps=600.0)
    c = compare(pairs(other), pricing, pairs(base))
    row = next(r for rows in c.groups.values() for r in rows if r.record is other)
    assert row.ratios["throughput"] == pytest.approx(1.5)


def write(records, directory):
    for r in records:
        write_record(r, directory)
    return directory


def bench(*args):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_gate_exit_codes(tmp_path):
    base = run(instance="p3.2xlarge", gpu="Tesla V100-SXM2-16GB", sps=500.0)
    same = copy.deepcopy(base)
    same.run_id = same.run_id[:-6] + "aaaaaa"
    worse = copy.deepcopy(same)
    worse.run_id = worse.run_id[:-6] + "bbbbbb"
    worse.throughput = Throughput(samples_per_s=400.0, iters_per_s=400.0 / 32)
    base_dir = write([base], tmp_path / "base")
    ok_dir = write([same], tmp_path / "ok")
    bad_dir = write([worse], tmp_path / "bad")
    gate = ["--baseline", str(base_dir), "--fail-on", "throughput:-5%"]
    passed = bench("compare", str(ok_dir), *gate)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 run(s) within limits" in passed.stdout
    failed = bench("compare", str(bad_dir), *gate)
    assert failed.returncode == 1 and "throughput -20.0%" in failed.stdout
    nothing = bench("compare", str(write([run(batch=2)], tmp_path / "other")), *gate)
    assert nothing.returncode == 1 and "nothing was checked" in nothing.stdout
    usage = bench(
        "compare", str(ok_dir), "--fail-on", "throughput:+5%", "--baseline", str(base_dir)
    )
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert bench("compare", str(ok_dir), "--fail-on", "p99:+5%").returncode == 2
    assert bench("compare", str(ok_dir), "--price-per-hour", "-1").returncode == 2
    assert bench("compare", str(ok_dir), "--instance", "x9.huge").returncode == 2
    spot = bench("compare", str(ok_dir), "--spot", "p3.2xlarge=0.918")
    assert spot.returncode == 0 and "0.918" in spot.stdout
    assert json.loads((ok_dir / f"{same.run_id}.json").read_text())["run_id"] == same.run_id


def test_default_basis_charges_the_share_used_and_cpu_runs_the_whole_instance():
    cat = load_catalogue()
    pricing = Pricing(cat)  # the default basis
    assert pricing.basis == "used"
    full = cat["p3.16xlarge"].price_per_hour_usd
    gpu_run = run(instance="p3.16xlarge", gpu="Tesla V100-SXM2-16GB", sps=360.0)
    cpu_run = run(instance="p3.16xlarge", device="cpu", sps=36.0)
    one_gpu_type = run(instance="p3.2xlarge", gpu="Tesla V100-SXM2-16GB", sps=360.0)
    c = compare(pairs(gpu_run, cpu_run, one_gpu_type), pricing)
    rows = {r.run_id: r for rows in c.groups.values() for r in rows}
    gpu_row, cpu_row = rows[gpu_run.run_id], rows[cpu_run.run_id]
    assert gpu_row.price_per_hour_usd == pytest.approx(full / 8)
    assert gpu_row.price.charged_as == "1/8 GPUs"
    assert cpu_row.price_per_hour_usd == pytest.approx(full)  # never a GPU share
    assert cpu_row.price.charged_as == "whole (CPU run)"
    whole = rows[one_gpu_type.run_id]  # all of a 1-GPU instance's GPUs: the whole instance
    assert whole.price_per_hour_usd == pytest.approx(cat["p3.2xlarge"].price_per_hour_usd)
    assert whole.price.charged_as == "1/1 GPUs"
    # a 1-GPU run on an 8-GPU type costs per sample what the same GPU costs alone
    assert gpu_row.usd_per_million == pytest.approx(full / 8 * 1e6 / (360 * 3600), rel=1e-12)
    text = render(c, wide=True)
    assert text.startswith("Prices per hour: each GPU run charged its share of the instance's")
    assert "| charged " in text and "| 1/8 GPUs " in text
    narrow = render(c)  # the share beside the hourly price
    assert "| $/h (share) " in narrow and "| 3.060 (1/8) " in narrow
    assert "| 24.480 (whole) " in narrow and "| 3.060 (1/1) " in narrow


def test_instance_basis_charges_every_run_the_whole_instance():
    cat = load_catalogue()
    r = run(instance="p3.16xlarge", gpu="Tesla V100-SXM2-16GB", sps=360.0)
    row = list(compare(pairs(r), Pricing(cat, basis="instance")).groups.values())[0][0]
    assert row.price_per_hour_usd == pytest.approx(cat["p3.16xlarge"].price_per_hour_usd)
    assert row.price.charged_as == "whole"


def test_scaling_section_prices_all_gpus_at_the_whole_instance(pricing):
    """g5.12xlarge has 4 A10Gs at 5.672 $/h: 1 GPU pays a quarter, 4 GPUs the whole."""
    runs = [
        run(instance="g5.12xlarge", gpu="NVIDIA A10G", mode="train", sps=sps, gpus=n)
        for n, sps in ((1, 100.0), (2, 180.0), (4, 340.0))
    ]
    c = compare(pairs(*runs), pricing)
    (points,) = c.scaling.values()
    assert [(p.ranks, p.efficiency) for p in points] == [(1, 1.0), (2, 0.9), (4, 0.85)]
    assert [p.row.price.charged_as for p in points] == ["1/4 GPUs", "2/4 GPUs", "4/4 GPUs"]
    assert points[2].row.price_per_hour_usd == pytest.approx(5.672)
    assert points[0].row.price_per_hour_usd == pytest.approx(5.672 / 4)
    text = render(c)
    assert "## Scaling across GPUs" in text
    assert "| 4      | 340.00      | 85%          | g5.12xlarge" in text
    # one group of work: the rank count is how the runs differ, shown beside the backend
    (group,) = c.groups.values()
    assert sorted(r.spec.backend_label for r in group) == [
        "torch (1 GPU)",
        "torch (2 GPUs)",
        "torch (4 GPUs)",
    ]


def test_scaling_groups_keep_instance_types_apart(pricing):
    """A one-GPU run on a g5.xlarge is no baseline for a g5.12xlarge run of the same work on
    the same GPU model: each instance type scales against its own one-GPU run."""
    runs = [
        run(instance="g5.xlarge", gpu="NVIDIA A10G", mode="train", sps=120.0, gpus=1),
        run(instance="g5.12xlarge", gpu="NVIDIA A10G", mode="train", sps=100.0, gpus=1),
        run(instance="g5.12xlarge", gpu="NVIDIA A10G", mode="train", sps=360.0, gpus=4),
    ]
    c = compare(pairs(*runs), pricing)
    (points,) = c.scaling.values()  # the g5.xlarge has one rank count only: no scaling
    assert [(p.ranks, p.row.instance, p.efficiency) for p in points] == [
        (1, "g5.12xlarge", 1.0),
        (4, "g5.12xlarge", 0.9),
    ]
    assert "NVIDIA A10G (g5.12xlarge)" in render(c)
