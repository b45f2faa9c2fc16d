"""Checks that need a real NVIDIA GPU. Skipped without one (see conftest.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.run.runner import prepare
from bench.run.spec import RunSpec
from bench.run.store import load_record
from bench.run.worker import execute
from bench.telemetry.devices import default_gpus

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.gpu


def test_torch_sees_the_gpu_nvidia_smi_reports():
    import torch

    gpus = default_gpus()
    assert torch.cuda.is_available()
    assert torch.cuda.device_count() == len(gpus)
    assert torch.cuda.get_device_name(0) == gpus[0].name


@pytest.mark.parametrize("workload", ["ssd", "bert"])
# auto: bf16 where the GPU has it (compute capability 8.0+), fp16 on V100 and T4
@pytest.mark.parametrize("precision", ["fp32", "fp16", "auto"])
def test_train_step_on_the_gpu(workload, precision):
    spec = prepare(
        RunSpec(
            workload=workload,
            mode="train",
            batch=2,
            precision=precision,
            device="cuda",
            warmup=1,
            iters=3,
            image_size=256,
            seq_len=64,
        )
    )
    record = execute(spec, progress=False)
    assert record.outcome.status == "ok", record.outcome
    assert record.environment.framework["device_name"]
    assert record.throughput is not None and record.throughput.samples_per_s > 0


def test_inference_with_host_to_device_copy_timed():
    spec = prepare(
        RunSpec(workload="ssd", batch=4, device="cuda", warmup=1, iters=5, include_h2d=True)
    )
    record = execute(spec, progress=False)
    assert record.outcome.status == "ok", record.outcome


def test_out_of_memory_is_an_outcome_not_a_crash(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--workload",
            "ssd",
            "--mode",
            "train",
            "--batch",
            "4096",
            "--device",
            "cuda",
            "--warmup",
            "0",
            "--iters",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    record = load_record(next(tmp_path.glob("*.json")))
    assert record.outcome.status == "oom", record.outcome
