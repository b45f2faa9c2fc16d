"""Checks that need a real NVIDIA GPU. Skipped without one (see conftest.py)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from bench.run.runner import prepare
from bench.run.store import load_record
from bench.run.worker import execute
from bench.schema.spec import RunSpec
from bench.telemetry.devices import default_gpus
from models.bert import torch as bert_torch
from models.bert.config import BertSettings, BertShape
from models.bert.torch import BertTorch
from models.ssd.torch import SsdTorch
from models.ssd.torch_box import Candidates
from models.torch_exec import CudaEventTimer

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.gpu


def test_torch_sees_the_gpu_nvidia_smi_reports():
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
            "1",  # the out-of-memory step: a pipelined run refuses --warmup 0
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


# -- execution modes: CUDA graphs, compile, device timers, profiles ---------------------------

#: A tiny BERT that learns fast: replayed and eager steps must follow the same losses.
TINY_BERT = BertSettings(
    shape=BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64),
    learning_rate=1e-3,
    warmup_steps=1,
)


@pytest.fixture
def no_bert_dropout(monkeypatch):
    """BERTs without dropout: eager, replayed and compiled steps draw random masks
    differently, so only a model without them can be compared step by step."""
    original = bert_torch.base_config

    def config(*args, **kw):
        built = original(*args, **kw)
        built.hidden_dropout_prob = 0.0
        built.attention_probs_dropout_prob = 0.0
        return built

    monkeypatch.setattr(bert_torch, "base_config", config)


@pytest.fixture
def fresh_compiler():
    """Each test compiles its own models: a clean dynamo cache, so that earlier tests'
    compilations of the same code do not count towards its recompile limit."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def bert_spec(**kw):
    return RunSpec(**{"workload": "bert", "device": "cuda:0", "batch": 4, "seq_len": 32, **kw})


def ssd_spec(**kw):
    return RunSpec(**{"workload": "ssd", "device": "cuda:0", "batch": 2, "image_size": 128, **kw})


def test_cuda_event_timer_times_the_queued_work():
    timer = CudaEventTimer(torch.device("cuda:0"))
    x = torch.randn(2048, 2048, device="cuda:0")
    torch.cuda.synchronize()
    host_start = time.perf_counter()
    start = timer.mark()
    for _ in range(20):
        x = torch.tanh(x @ x)
    end = timer.mark()
    torch.cuda.synchronize()
    host = time.perf_counter() - host_start
    device = timer.elapsed_s(start, end)
    assert timer.kind == "cuda_events"
    assert 0 < device <= host
    # 20 matrix products of 2048^3 multiply-adds: far more than a microsecond on any GPU
    assert device > 1e-4


def test_graph_captured_bert_training_follows_eager_steps(no_bert_dropout):
    eager = BertTorch(bert_spec(mode="train"), TINY_BERT)
    eager.setup()
    graphed = BertTorch(bert_spec(mode="train", cuda_graphs=True), TINY_BERT)
    graphed.setup()
    # set-up ran whole steps: the profiled one, then (graphs) the three warm-up steps
    assert (eager.setup_steps, graphed.setup_steps) == (1, 4)
    want = [float(eager.step()) for _ in range(6)]
    got = [float(graphed.step()) for _ in range(3)]
    assert got == pytest.approx(want[3:], rel=1e-4)
    assert want[-1] < want[0]
    # the schedule stepped outside the graph and the captured update read its value
    lr = graphed.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.device.type == "cuda"
    assert float(lr) == pytest.approx(eager.optimizer.param_groups[0]["lr"], rel=1e-6)
    # Adam turns gradient noise into whole steps where a gradient is near zero: compare the
    # parameters as one vector, not element by element
    got_params = parameters_to_vector(graphed.model.parameters()).detach()
    want_params = parameters_to_vector(eager.model.parameters()).detach()
    assert float((got_params - want_params).norm()) <= 1e-4 * float(want_params.norm())
    details = graphed.execution_details()
    assert details["cuda_graphs"] is True and details["fused_optimizer"] is True
    assert details["attention_implementation"] == "sdpa"
    assert details["attention_kernel"] in {"flash", "efficient", "cudnn", "math"}
    assert details["cudnn_benchmark"] is True and details["tf32_matmul"] is False
    assert graphed.one_off_s["capture_s"] > 0
    assert graphed.optimizer.defaults["capturable"] is True


def test_graph_captured_ssd_training_follows_eager_steps():
    eager = SsdTorch(ssd_spec(mode="train"))
    eager.setup()
    graphed = SsdTorch(ssd_spec(mode="train", cuda_graphs=True))
    graphed.setup()
    assert (eager.setup_steps, graphed.setup_steps) == (0, 3)
    want = [float(eager.step()) for _ in range(6)]
    got = [float(graphed.step()) for _ in range(3)]
    # TF32 convolutions (as declared for SSD) and non-deterministic weight gradients
    assert got == pytest.approx(want[3:], rel=2e-3)
    assert want[-1] != want[0]
    details = graphed.execution_details()
    assert details["cuda_graphs"] is True and details["fused_optimizer"] is True
    assert details["channels_last"] is True and details["tf32_cudnn"] is True
    assert graphed.optimizer.defaults["fused"] is True
    assert graphed.one_off_s["capture_s"] > 0


def test_graph_captured_bert_inference_replays_the_eager_logits():
    graphed = BertTorch(bert_spec(mode="infer", cuda_graphs=True), TINY_BERT)
    graphed.setup()
    assert not bool(graphed.batch["attention_mask"].all())  # padded: eager keeps the mask
    got = graphed.step().clone()
    with torch.inference_mode():
        want = graphed.model(**graphed.step_inputs).logits
    assert got.shape == (4, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert graphed.execution_details()["cuda_graphs"] is True


def test_graph_captured_ssd_inference_replays_eager_detections():
    graphed = SsdTorch(ssd_spec(mode="infer", cuda_graphs=True))
    graphed.setup()
    ids, scores, boxes = graphed.step()
    assert isinstance(graphed.graph.output, Candidates)  # NMS runs after the replay
    with torch.inference_mode():
        want_ids, want_scores, want_boxes = graphed._detect(graphed.images)
    assert (want_ids >= 0).sum() > 10
    assert torch.equal(ids, want_ids)
    torch.testing.assert_close(scores, want_scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(boxes, want_boxes, rtol=1e-5, atol=1e-3)


def test_compiled_then_captured_bert_training_follows_eager_steps(no_bert_dropout, fresh_compiler):
    eager = BertTorch(bert_spec(mode="train"), TINY_BERT)
    eager.setup()
    fast = BertTorch(bert_spec(mode="train", compile="default", cuda_graphs=True), TINY_BERT)
    fast.setup()
    # the compiling step, the profiled step, three warm-up steps
    assert fast.setup_steps == 5
    want = [float(eager.step()) for _ in range(7)]
    got = [float(fast.step()) for _ in range(3)]
    assert got == pytest.approx(want[4:], rel=1e-3)
    assert fast.one_off_s["compile_s"] > 0 and fast.one_off_s["capture_s"] > 0
    details = fast.execution_details()
    assert details["compile"] == "default" and details["fullgraph"] is True
    assert details["cuda_graphs"] is True


@pytest.mark.parametrize(
    "overrides",
    [
        {"workload": "ssd", "mode": "infer", "compile": "default", "cuda_graphs": True},
        {"workload": "bert", "mode": "train", "cuda_graphs": True},
    ],
    ids=["ssd-infer-compile-graphs", "bert-train-graphs"],
)
def test_fast_modes_end_to_end(overrides, fresh_compiler):
    spec = prepare(
        RunSpec(
            **{
                "batch": 2,
                "device": "cuda",
                "warmup": 1,
                "iters": 5,
                "image_size": 128,
                "seq_len": 64,
                "timing": "pipelined",
                **overrides,
            }
        )
    )
    record = execute(spec, progress=False, profile_steps=2)
    assert record.outcome.status == "ok", record.outcome
    execution = record.execution
    assert execution.details["cuda_graphs"] is True
    assert execution.details["compile"] == spec.compile
    assert execution.one_off_s["capture_s"] > 0
    assert ("compile_s" in execution.one_off_s) == (spec.compile != "off")
    assert execution.step_timer == "cuda_events"
    assert len(record.latencies_ms) == 5 and min(record.latencies_ms) > 0
    assert execution.profile and sum(row["share"] for row in execution.profile) <= 1 + 1e-9


def test_profile_on_the_gpu_ranks_kernels_by_device_time():
    wl = BertTorch(bert_spec(mode="infer"), TINY_BERT)
    wl.setup()
    assert isinstance(wl.step_timer(time.perf_counter), CudaEventTimer)
    rows = wl.profile(3)
    assert rows and all(row["total_ms"] > 0 and row["calls"] >= 1 for row in rows)
    # device entries (kernels, copies), not the CPU operators that launched them
    assert not any(row["name"].startswith("aten::") for row in rows)
    times = [row["total_ms"] for row in rows]
    assert times == sorted(times, reverse=True)
    assert 0 < sum(row["share"] for row in rows) <= 1 + 1e-9
