"""Data-parallel training through the harness on the CPU: two gloo ranks started by torchrun,
as `bench run --device cpu --gpus 2` starts them. Real models, small shapes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.run import runner
from bench.run.distributed import rank_result_path
from bench.run.registry import run_label
from bench.run.store import load_record
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = dict(progress=False, telemetry_interval_s=None)


def run_ranks(spec: RunSpec, out: Path) -> RunRecord:
    prepared = runner.prepare(spec, gpus=[])
    record, _ = runner.run(prepared, runner.RunOptions(out_dir=out, **OPTIONS))
    return record


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        RunSpec(workload="bert", mode="train", batch=2, seq_len=16, device="cpu", gpus=2),
        RunSpec(workload="ssd", mode="train", batch=2, image_size=128, device="cpu", gpus=2),
    ],
    ids=["bert", "ssd"],
)
def test_two_gloo_ranks_train_in_step(spec, tmp_path):
    spec = spec.replace(warmup=1, iters=3)
    record = run_ranks(spec, tmp_path)
    assert record.ok, record.outcome
    assert [r.rank for r in record.ranks] == [0, 1]
    assert all(r.status == "ok" and r.device == "cpu" for r in record.ranks)
    # the ranks trained on different samples (seed + rank) and their updates were averaged:
    # their parameters are the same
    sums = [r.distributed["parameter_sum"] for r in record.ranks]
    assert sums[0] == sums[1]
    # global throughput: both ranks' samples over the common window
    assert record.timing is not None and record.throughput is not None
    assert record.timing.measured_samples == 2 * 3 * spec.batch
    window = max(r.window_s for r in record.ranks)
    assert record.timing.window_s == window
    assert record.throughput.samples_per_s == record.timing.measured_samples / window
    assert [r.measured_samples for r in record.ranks] == [3 * spec.batch] * 2
    dist = record.execution.details["distributed"]
    assert dist["world_size"] == 2 and dist["process_group"] == "gloo"
    assert dist["wrapper"] == "DistributedDataParallel" and dist["bucket_cap_mb"] == 25.0
    assert 0.0 <= dist["comm_share"] < 1.0
    assert dist["step_s_with_grad_sync"] > 0 and dist["step_s_without_grad_sync"] > 0
    assert run_label(record.spec).endswith("_g2")


def _ranks_of(pid: int) -> list[psutil.Process]:
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "RANK" in child.environ() and "bench.run.worker" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


def _set_up(rank: psutil.Process) -> bool:
    """Whether a rank's checkpoint record (its hand-off file, which the worker writes at
    each stage) has the workload's facts: set-up is over and the window next."""
    result = Path([arg for arg in rank.cmdline() if arg.endswith(".json")][-1])  # after the spec
    checkpoint = rank_result_path(result, int(rank.environ()["RANK"]))
    try:
        return json.loads(checkpoint.read_text()).get("workload") is not None
    except (OSError, ValueError):
        return False


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_an_error_and_no_process_left(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--workload",
        "ssd",
        "--mode",
        "train",
        "--batch",
        "1",
        "--image-size",
        "128",
        "--device",
        "cpu",
        "--gpus",
        "2",
        "--warmup",
        "1",
        "--duration",
        "120",
        "--no-progress",
        "--no-telemetry",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        victims: list[psutil.Process] = []
        while time.monotonic() < deadline and len(victims) < 2:
            time.sleep(0.5)
            victims = _ranks_of(proc.pid)
        assert len(victims) == 2, "two ranks started"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(_set_up(v) for v in victims):
            time.sleep(0.5)
        assert all(_set_up(v) for v in victims), "both ranks set up"  # into the window
        everyone = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        rank1 = next(v for v in victims if v.environ().get("RANK") == "1")
        killed_at = time.monotonic()
        rank1.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=90)
        ended_in = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err.decode()[-2000:]
    assert ended_in < 60
    records = list(tmp_path.glob("*.json"))
    assert len(records) == 1
    record = load_record(records[0])
    assert record.outcome.status == "error"
    assert "rank" in (record.outcome.message or "")
    assert [r.status for r in record.ranks] == ["error", "error"]
    gone, alive = psutil.wait_procs(everyone, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert b"result:" in out


@pytest.mark.parametrize("timing", ["synchronized", "pipelined"])
def test_ranks_of_unequal_speed_stop_a_duration_on_the_same_step(timing, tmp_path):
    """Rank 1 is slower after each step: by its own clock it would end the window a step
    before rank 0, whose extra all-reduce would then wait on rank 1's end barrier until the
    collective timeout. Rank 0's clock decides for both: they end together, at once."""
    result = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    cmd += ["--nproc-per-node", "2", "--max-restarts", "0", "-m", "tests.uneven_ranks"]
    proc = subprocess.Popen(
        [*cmd, timing, str(result)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # generous: start-up on a busy machine, not a timing claim; far below the 120 s a
        # mismatched collective would wait
        out, _ = proc.communicate(timeout=100)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the ranks did not end: a mismatched collective")
    assert proc.returncode == 0, out[-3000:]
    ranks = [load_record(result.with_name(f"result.rank{r}.json")) for r in (0, 1)]
    assert all(r.ok for r in ranks), [r.outcome for r in ranks]
    steps = [r.timing.measured_iters for r in ranks if r.timing is not None]
    assert len(steps) == 2 and steps[0] == steps[1] > 0
    sums = [r.execution.details["distributed"]["parameter_sum"] for r in ranks]
    assert sums[0] == sums[1]
