"""Multi-device runs, the harness side: rank placement, the torchrun command, merging the
ranks' records into the run's, scaling efficiency, the interconnect, and what is refused
before anything starts. The machine's facts are data here."""

import pytest

from bench.analysis.cost import gpus_used
from bench.run.distributed import (
    merge,
    rank_device,
    rank_env,
    rank_result_path,
    scaling_efficiency,
    torchrun_command,
    torchrun_failure,
)
from bench.run.registry import run_label
from bench.run.runner import prepare
from bench.run.store import new_record
from bench.schema.record import (
    Environment,
    Flag,
    Outcome,
    Throughput,
    Timing,
    WorkloadFacts,
)
from bench.schema.spec import RunSpec, SpecError
from bench.schema.telemetry import TelemetrySummary
from bench.telemetry.devices import parse_gpu_query
from bench.telemetry.topology import parse_topology

H100X8 = parse_gpu_query(
    "".join(
        f"{i}, NVIDIA H100 80GB HBM3, GPU-{i}, 00000000:{i:02X}:00.0, 81559, 580.1, 9.0\n"
        for i in range(8)
    )
)


def installed(_name: str) -> bool:
    return True


def test_gpus_all_resolves_to_the_machines_gpu_count():
    spec = prepare(RunSpec(workload="bert", mode="train", gpus="all"), gpus=H100X8)
    assert spec.gpus == 8 and spec.ranks == 8 and spec.device == "cuda:0"
    assert run_label(spec).endswith("_g8")
    assert prepare(RunSpec(workload="ssd", gpus=2, device="cpu"), gpus=[], cores=2).gpus == 2


@pytest.mark.parametrize(
    "spec, gpus, message",
    [
        (RunSpec(workload="bert", mode="train", gpus=9, device="cuda"), H100X8, "has 8 GPU"),
        (RunSpec(workload="bert", mode="train", gpus="all"), [], "no NVIDIA GPU"),
        (RunSpec(workload="bert", gpus=2, device="cuda:3"), H100X8, "cuda:0 onwards"),
        (RunSpec(workload="bert", backend="onnxruntime", device="cpu"), [], None),
    ],
)
def test_more_gpus_than_the_machine_has_is_refused_before_the_run(spec, gpus, message):
    if message is None:
        with pytest.raises(SpecError, match="not bert on onnxruntime"):
            prepare(spec.replace(gpus=2), gpus=gpus, installed=installed, cores=2)
        return
    with pytest.raises(SpecError, match=message):
        prepare(spec, gpus=gpus, installed=installed)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"gpus": 0}, "gpus must be between 1"),
        ({"gpus": "four"}, "gpus must be an integer"),
        ({"gpus": "all", "device": "cpu"}, "on the CPU give a number of ranks"),
        ({"gpus": 2, "scenario": "offline"}, "run replicas in the loop"),
        ({"gpus": 2, "cuda_graphs": True, "device": "cuda"}, "not captured across"),
    ],
)
def test_bad_rank_specs(changes, message):
    with pytest.raises(SpecError, match=message):
        RunSpec(**{"workload": "bert", **changes})


def test_ranks_only_where_the_implementation_uses_several_devices():
    """The registry's ``multi_device``: a workload or backend that never uses several devices
    is told where --gpus runs; a pair that does not, to drop it."""
    null = RunSpec(workload="null", gpus=2, device="cpu")
    with pytest.raises(SpecError) as refused:
        prepare(null, gpus=[], installed=installed, cores=2)
    assert str(refused.value) == (
        "--gpus runs the torch and mxnet paths of ssd, bert and bert-qa, not null on torch"
    )
    qa = RunSpec(workload="bert-qa", mode="train", gpus=2, device="cpu")
    with pytest.raises(SpecError) as refused:
        prepare(qa, gpus=[], installed=installed, cores=2)
    assert str(refused.value) == "torch runs bert-qa on one device: drop --gpus"


def test_rank_environment_and_placement():
    assert rank_env({}) is None
    env = rank_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert env is not None and (env.rank, env.local_rank, env.world_size) == (3, 1, 4)
    gpu = RunSpec(workload="bert", gpus=2, device="cuda:0")
    assert rank_device(gpu, 1) == "cuda:1"
    assert rank_device(RunSpec(workload="bert", gpus=2, device="cpu"), 1) == "cpu"
    assert str(rank_result_path(__import__("pathlib").Path("/t/result.json"), 1)) == (
        "/t/result.rank1.json"
    )


def test_torchrun_command_starts_every_rank_without_restarts():
    cmd = torchrun_command("py", 4, ["run", "spec.json", "result.json"])
    assert cmd == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "4",
        "--max-restarts",
        "0",
        "--monitor-interval",
        "0.5",
        "--module",
        "bench.run.worker",
        "run",
        "spec.json",
        "result.json",
    ]


TORCHRUN_FAILURE = """\
E1126 17:20:01.123000 1234 torch/distributed/elastic/multiprocessing/api.py:900] failed
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
bench.run.worker FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-26_17:20:01
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
============================================================
"""


def test_torchrun_failure_names_the_rank_that_failed_first():
    assert torchrun_failure(TORCHRUN_FAILURE) == (
        "torchrun: rank 1 exited with code -9 (Signal 9 (SIGKILL) received by PID 4242)"
    )
    assert torchrun_failure("all fine\n") is None


def rank_record(rank, samples, window, latencies_ms, energy=None, util=None, flags=()):
    spec = RunSpec(workload="bert", mode="train", batch=4, gpus=2, device=f"cuda:{rank}")
    record = new_record(spec, Environment(framework={"device_name": "NVIDIA H100 80GB HBM3"}))
    record.outcome = Outcome(status="ok", message=None)
    record.workload = WorkloadFacts("x", "step", 4, 1e9, "test", 3, False)
    record.timing = Timing(2, 0.1, len(latencies_ms), samples, window)
    record.throughput = Throughput(samples / window, len(latencies_ms) / window)
    record.latencies_ms = list(latencies_ms)
    record.telemetry = TelemetrySummary(
        available=True,
        reason=None,
        energy_j=energy,
        power_mean_w=energy / window if energy else None,
        util_gpu_mean_pct=util,
        mem_used_peak_mib=1000.0 * (rank + 1),
    )
    record.validity.flags = [Flag(code, f"{code} on this rank") for code in flags]
    return record


def test_merge_sums_samples_over_the_common_window():
    spec = RunSpec(workload="bert", mode="train", batch=4, gpus=2, device="cuda:0")
    ranks = [
        rank_record(0, 40, 2.0, [200.0] * 10, energy=600.0, util=90.0),
        rank_record(1, 40, 2.5, [250.0] * 10, energy=700.0, util=70.0, flags=("throttled",)),
    ]
    merged = merge(spec, ranks)
    assert merged.ok and merged.spec == spec
    assert merged.timing is not None and merged.timing.window_s == 2.5  # the last rank's end
    assert merged.timing.measured_samples == 80
    assert merged.throughput is not None and merged.throughput.samples_per_s == 32.0
    # 1 GFLOP forward x3 (training) per sample
    assert merged.throughput.tflops_per_s == pytest.approx(32 * 3e9 / 1e12)
    mfu = merged.throughput.mfu
    assert mfu is not None and mfu.basis.startswith("per GPU (the run's TFLOP/s over its 2 GPUs)")
    assert mfu.mfu == pytest.approx(32 * 3e9 / 1e12 / 2 / mfu.peak_tflops)
    assert merged.latency is not None and merged.latency.count == 20
    assert merged.latency.p50_ms == 225.0
    tele = merged.telemetry
    assert tele.energy_j == 1300.0 and tele.energy_per_sample_j == 1300.0 / 80
    assert tele.power_mean_w == 600.0 / 2.0 + 700.0 / 2.5
    assert tele.util_gpu_mean_pct == 80.0 and tele.mem_used_peak_mib == 2000.0
    assert [(r.rank, r.device, r.samples_per_s) for r in merged.ranks] == [
        (0, "cuda:0", 20.0),
        (1, "cuda:1", 16.0),
    ]
    assert Flag("throttled", "rank 1: throttled on this rank") in merged.validity.flags
    assert gpus_used(merged) == 2


def test_a_failed_rank_fails_the_run_with_its_own_error():
    spec = RunSpec(workload="bert", mode="train", batch=4, gpus=2, device="cuda:0")
    ok = rank_record(0, 40, 2.0, [200.0] * 10, energy=600.0, util=90.0)
    killed = rank_record(1, 40, 2.0, [200.0] * 10, energy=600.0, util=90.0)
    killed.outcome = Outcome(
        status="error", message="the worker exited with code 1", traceback=None
    )
    raised = rank_record(1, 40, 2.0, [200.0] * 10, energy=600.0, util=90.0)
    raised.outcome = Outcome(status="error", message="RuntimeError: boom", traceback="Traceback")
    merged = merge(spec, [ok, killed])
    assert not merged.ok and merged.outcome.message == "rank 1: the worker exited with code 1"
    assert merged.throughput is None and merged.timing is None
    stopped = rank_record(0, 40, 2.0, [200.0] * 10)
    stopped.outcome = Outcome(status="error", message="stopped by torchrun", traceback=None)
    merged = merge(spec, [stopped, raised])
    assert merged.outcome.message == "rank 1: RuntimeError: boom"
    assert [r.status for r in merged.ranks] == ["error", "error"]


def test_scaling_efficiency():
    assert scaling_efficiency(700.0, 8, 100.0) == 0.875
    assert scaling_efficiency(100.0, 1, 100.0) == 1.0
    with pytest.raises(ValueError):
        scaling_efficiency(1.0, 2, 0.0)


P5_TOPOLOGY = """\
\tGPU0\tGPU1\tGPU2\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tNV18\tNV18\tPXB\t0-47\t0\t\tN/A
GPU1\tNV18\t X \tNV18\tSYS\t0-47\t0\t\tN/A
GPU2\tNV18\tNV18\t X \tSYS\t48-95\t1\t\tN/A
NIC0\tPXB\tSYS\tSYS\t X \t\t\t\t

Legend:

  X    = Self
  NV#  = Connection traversing a bonded set of # NVLinks
"""

G5_TOPOLOGY = """\
\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tPHB\t0-47\t0\t\tN/A
GPU1\tPHB\t X \t0-47\t0\t\tN/A
"""


def test_topology_says_whether_gpus_share_nvlink():
    p5 = parse_topology(P5_TOPOLOGY)
    assert p5["links"] == {"0-1": "NV18", "0-2": "NV18", "1-2": "NV18"}
    assert p5["nvlink"] is True and p5["nvlinks_min"] == 18 and p5["gpus"] == 3
    g5 = parse_topology(G5_TOPOLOGY)
    assert g5["links"] == {"0-1": "PHB"} and g5["nvlink"] is False and g5["nvlinks_min"] is None
    single = parse_topology("\tGPU0\tCPU Affinity\nGPU0\t X \t0-15\n")
    assert single["links"] == {} and single["nvlink"] is None
    with pytest.raises(ValueError):
        parse_topology("nvidia-smi: command failed\n")
