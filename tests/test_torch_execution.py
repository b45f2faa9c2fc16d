"""Execution modes of the PyTorch path on the CPU: torch.compile (fullgraph, never an eager
fallback) against eager results, the profiler's ranking, the SDPA kernel mapping and the
execution facts recorded. CUDA graphs and CUDA event timers are checked in test_gpu.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.nn.utils import parameters_to_vector
from torch.profiler import DeviceType
from transformers import BertConfig, BertForSequenceClassification

from bench.run.loop import HostTimer
from bench.schema.spec import RunSpec
from models import torch_exec
from models.bert import config as bert
from models.bert import torch as bert_torch
from models.bert.torch import BertTorch
from models.ssd.torch import SsdTorch
from models.torch_exec import (
    COMPILE_FAILED,
    PROFILE_NAME_LIMIT,
    CompileError,
    profile_rows,
    sdpa_kernel,
    top_entries,
)

TINY = bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
SEQ_LEN = 16


@pytest.fixture(scope="module", autouse=True)
def _inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Compiled kernels go to a directory of this test session, not the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
        yield


@pytest.fixture(autouse=True)
def _torch_state() -> Iterator[None]:
    """Two threads; a clean compiler cache after each test (the models share code objects,
    and each new compilation of one counts towards dynamo's recompile limit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch._dynamo.reset()
    torch.set_num_threads(threads)


def bert_spec(**kw: Any) -> RunSpec:
    base = {"workload": "bert", "device": "cpu", "batch": 4, "seq_len": SEQ_LEN}
    return RunSpec(**{**base, **kw})


def ssd_spec(**kw: Any) -> RunSpec:
    base = {"workload": "ssd", "device": "cpu", "batch": 1, "image_size": 128}
    return RunSpec(**{**base, **kw})


def no_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny BERTs without dropout: eager and compiled code draw random masks differently."""
    original = bert_torch.base_config

    def config(*args: Any, **kw: Any) -> BertConfig:
        built = original(*args, **kw)
        built.hidden_dropout_prob = 0.0
        built.attention_probs_dropout_prob = 0.0
        return built

    monkeypatch.setattr(bert_torch, "base_config", config)


# -- pure functions ----------------------------------------------------------------------------


def test_top_entries_rank_by_time_with_shares_of_everything_given() -> None:
    rows = [
        ("aten::softmax", 1000.0, 4),
        ("aten::mm", 3000.0, 12),
        ("aten::view", 0.0, 90),  # no time: dropped
        ("aten::bmm", 1000.0, 8),  # ties are ordered by name
        ("aten::add", 1000.0, 40),
    ]
    assert top_entries(rows, top=3) == [
        {"name": "aten::mm", "total_ms": 3.0, "calls": 12, "share": 0.5},
        {"name": "aten::add", "total_ms": 1.0, "calls": 40, "share": 1 / 6},
        {"name": "aten::bmm", "total_ms": 1.0, "calls": 8, "share": 1 / 6},
    ]
    every = top_entries(rows)
    assert [e["name"] for e in every] == ["aten::mm", "aten::add", "aten::bmm", "aten::softmax"]
    assert sum(e["share"] for e in every) == pytest.approx(1.0)
    assert top_entries([]) == []


def test_top_entries_keep_fifteen_and_shorten_long_names() -> None:
    rows = [(f"kernel_{i:02d}", float(100 - i), 1) for i in range(20)]
    rows.append(("k" * 1000, 1.0, 3))
    top = top_entries(rows)
    assert len(top) == 15
    assert [e["name"] for e in top] == [f"kernel_{i:02d}" for i in range(15)]
    assert top[0]["share"] == pytest.approx(100.0 / (sum(100 - i for i in range(20)) + 1.0))
    longest = top_entries([("k" * 1000, 1.0, 3)])[0]
    assert len(longest["name"]) == PROFILE_NAME_LIMIT and longest["name"].endswith("...")
    assert longest == {"name": longest["name"], "total_ms": 0.001, "calls": 3, "share": 1.0}


@dataclass
class FakeAverage:
    key: str
    device_type: DeviceType
    self_cpu_time_total: float
    self_device_time_total: float
    count: int
    is_user_annotation: bool = False


def test_profile_rows_take_kernels_on_a_gpu_and_operators_on_the_cpu() -> None:
    averages = [
        FakeAverage("aten::mm", DeviceType.CPU, 40.0, 900.0, 2),
        FakeAverage("sm90_gemm_kernel", DeviceType.CUDA, 0.0, 900.0, 2),
        FakeAverage("Memcpy HtoD", DeviceType.CUDA, 0.0, 50.0, 1),
        FakeAverage("my_range", DeviceType.CPU, 500.0, 950.0, 1, is_user_annotation=True),
        FakeAverage("my_range", DeviceType.CUDA, 0.0, 950.0, 1, is_user_annotation=True),
        FakeAverage("aten::relu", DeviceType.CPU, 10.0, 0.0, 3),
    ]
    assert profile_rows(averages, device_time=True) == [
        ("sm90_gemm_kernel", 900.0, 2),
        ("Memcpy HtoD", 50.0, 1),
    ]
    assert profile_rows(averages, device_time=False) == [
        ("aten::mm", 40.0, 2),
        ("aten::relu", 10.0, 3),
    ]


@pytest.mark.parametrize(
    ("ops", "kernel"),
    [
        (
            ["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention"],
            "flash",
        ),
        (["aten::_scaled_dot_product_efficient_attention", "aten::linear"], "efficient"),
        (["aten::_scaled_dot_product_cudnn_attention"], "cudnn"),
        (["aten::_scaled_dot_product_flash_attention_for_cpu"], "flash_cpu"),
        (["aten::_scaled_dot_product_fused_attention_overrideable"], "overrideable"),
        (
            ["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_attention_math"],
            "math",
        ),
        (["aten::scaled_dot_product_attention", "aten::softmax"], "math"),
        # backward operators alone name no forward kernel; the first listed backend wins
        (["aten::_scaled_dot_product_flash_attention_backward"], None),
        (
            [
                "aten::_scaled_dot_product_attention_math",
                "aten::_scaled_dot_product_efficient_attention",
            ],
            "efficient",
        ),
        (["aten::bmm", "aten::softmax"], None),
        ([], None),
    ],
)
def test_sdpa_kernel_from_operator_names(ops: list[str], kernel: str | None) -> None:
    assert sdpa_kernel(ops) == kernel


# -- eager facts ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_eager_bert_records_the_sdpa_kernel_and_its_execution(mode: str) -> None:
    wl = BertTorch(bert_spec(mode=mode), bert.BertSettings(shape=TINY))
    wl.setup()
    details = wl.execution_details()
    assert details["attention_kernel"] in {"flash_cpu", "math"}
    assert details["attention_kernel_note"] is None
    assert details == {
        "compile": "off",
        "compile_backend": None,
        "fullgraph": None,
        "cuda_graphs": False,
        "setup_steps": 1,  # the profiled step
        "autocast": None,
        "cudnn_benchmark": False,
        "tf32_matmul": False,
        "tf32_cudnn": False,
        "distributed": None,  # one process, no ranks
        "host_syncs": {"per_step": None, "reason": "not counted yet"},  # after the window
        "channels_last": False,
        "fused_optimizer": mode == "train",  # fused AdamW on every device
        "attention_implementation": "sdpa",
        "attention_kernel": details["attention_kernel"],
        "attention_kernel_note": None,
    }
    assert wl.model.config._attn_implementation == "sdpa"
    assert wl.one_off_s == {}


def test_eager_ssd_execution_facts_and_host_timer() -> None:
    wl = SsdTorch(ssd_spec(mode="train"))
    wl.setup()
    details = wl.execution_details()
    assert details["compile"] == "off" and details["cuda_graphs"] is False
    assert details["channels_last"] is False and details["fused_optimizer"] is False
    assert details["setup_steps"] == 0 and wl.one_off_s == {}
    assert wl.optimizer.defaults["fused"] is False
    timer = wl.step_timer(lambda: 7.5)
    assert isinstance(timer, HostTimer) and timer.kind == "host_clock"
    assert timer.mark() == 7.5 and timer.elapsed_s(1.0, 3.5) == 2.5


def test_profile_on_the_cpu_returns_operators_by_self_time() -> None:
    wl = BertTorch(bert_spec(mode="infer"), bert.BertSettings(shape=TINY))
    wl.setup()
    rows = wl.profile(2)
    assert rows and len(rows) <= torch_exec.PROFILE_TOP
    assert all(set(row) == {"name", "total_ms", "calls", "share"} for row in rows)
    times = [row["total_ms"] for row in rows]
    assert times == sorted(times, reverse=True) and times[-1] > 0
    assert 0 < sum(row["share"] for row in rows) <= 1 + 1e-9
    calls = {row["name"]: row["calls"] for row in rows}
    # per step: 14 linear layers (6 in each of 2 layers, pooler, classifier) and 5 layer
    # norms (embeddings, 2 in each layer)
    assert calls["aten::addmm"] == 2 * 14
    assert calls["aten::native_layer_norm"] == 2 * 5


# -- compile ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_bert_inference_matches_eager() -> None:
    eager = BertTorch(bert_spec(mode="infer"), bert.BertSettings(shape=TINY))
    eager.setup()
    compiled = BertTorch(bert_spec(mode="infer", compile="default"), bert.BertSettings(shape=TINY))
    compiled.setup()
    assert compiled.forward is not compiled.model
    torch.testing.assert_close(
        compiled.model.state_dict(), eager.model.state_dict(), rtol=0, atol=0
    )
    want, got = eager.step(), compiled.step()
    assert got.shape == (4, 2)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert compiled.one_off_s["compile_s"] > 0
    details = compiled.execution_details()
    assert details["compile"] == "default" and details["fullgraph"] is True
    assert details["compile_backend"] == "inductor" and details["setup_steps"] == 2
    # inductor either calls an SDPA kernel or computes attention itself (then says so)
    kernel = details["attention_kernel"]
    assert kernel in {"flash_cpu", "math", None}
    assert (kernel is None) == (details["attention_kernel_note"] is not None)


@pytest.mark.slow
def test_compiled_bert_training_follows_eager_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    no_dropout(monkeypatch)
    settings = bert.BertSettings(shape=TINY, learning_rate=1e-3, warmup_steps=1)
    eager = BertTorch(bert_spec(mode="train"), settings)
    eager.setup()
    compiled = BertTorch(bert_spec(mode="train", compile="default"), settings)
    compiled.setup()
    # Set-up ran whole training steps: the profiled one, and the compiling one before it.
    assert (eager.setup_steps, compiled.setup_steps) == (1, 2)
    want = [float(eager.step()) for _ in range(4)]
    got = [float(compiled.step()) for _ in range(3)]
    assert got == pytest.approx(want[1:], rel=1e-4)
    assert want[-1] < want[0]  # the updates did something
    assert compiled.scheduler.last_epoch == eager.scheduler.last_epoch == 5
    # Adam turns gradient noise into whole steps where a gradient is near zero: compare the
    # parameters as one vector, not element by element
    got_params = parameters_to_vector(compiled.model.parameters()).detach()
    want_params = parameters_to_vector(eager.model.parameters()).detach()
    assert float((got_params - want_params).norm()) <= 1e-5 * float(want_params.norm())
    assert compiled.one_off_s["compile_s"] > 0
    assert compiled.execution_details()["compile"] == "default"


@pytest.mark.slow
def test_compiled_ssd_inference_matches_eager() -> None:
    eager = SsdTorch(ssd_spec(mode="infer"))
    eager.setup()
    compiled = SsdTorch(ssd_spec(mode="infer", compile="default"))
    compiled.setup()
    assert compiled.one_off_s["compile_s"] > 0 and compiled.setup_steps == 1
    details = compiled.execution_details()
    assert details["compile"] == "default" and details["fullgraph"] is True
    with torch.inference_mode():
        raw = eager.net(eager.images)
        fast = compiled.forward_net(compiled.images)
    for got, want in zip(fast, raw, strict=True):
        # an untrained trunk's logits reach the hundreds: the tolerance follows their scale
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    ids, scores, boxes = compiled.step()
    want_ids, want_scores, want_boxes = eager.step()
    assert (want_ids >= 0).sum() > 10  # detections to compare
    assert torch.equal(ids, want_ids)
    torch.testing.assert_close(scores, want_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(boxes, want_boxes, rtol=1e-4, atol=0.02)  # pixels of 128


def test_a_graph_break_fails_the_compile_and_never_runs_eagerly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = BertForSequenceClassification.forward

    def forward(self: BertForSequenceClassification, **kw: Any) -> Any:
        out = original(self, **kw)
        if out.logits.sum() > 0:  # data-dependent Python branch: a graph break
            return out
        return out

    monkeypatch.setattr(BertForSequenceClassification, "forward", forward)
    wl = BertTorch(bert_spec(mode="infer", compile="default"), bert.BertSettings(shape=TINY))
    with pytest.raises(CompileError) as info:
        wl.setup()
    message = str(info.value)
    assert message.startswith(f"{COMPILE_FAILED} (mode default): graph break under fullgraph")
    assert "Data-dependent branching" in message and "in forward" in message
    assert isinstance(info.value.__cause__, torch._dynamo.exc.Unsupported)
    assert "compile_s" not in wl.one_off_s
    # A second call fails again: no eager fallback was cached for the frame.
    with pytest.raises(torch._dynamo.exc.Unsupported), torch.inference_mode():
        wl.forward(**wl.step_inputs)


def test_compile_errors_name_the_mode_and_the_failure() -> None:
    def broken() -> None:
        raise ValueError("shape mismatch\nmore detail")

    def no_sync() -> None:
        return None

    with pytest.raises(CompileError) as info:
        torch_exec.run_first_compiled_step(broken, "max-autotune", no_sync, lambda e: False)
    assert str(info.value) == "compile failed (mode max-autotune): ValueError: shape mismatch"
    oom = torch.OutOfMemoryError("CUDA out of memory")

    def out_of_memory() -> None:
        raise oom

    with pytest.raises(torch.OutOfMemoryError):
        torch_exec.run_first_compiled_step(out_of_memory, "default", no_sync, lambda e: True)
    result, seconds = torch_exec.run_first_compiled_step(lambda: 3, "default", no_sync, bool)
    assert result == 3 and seconds >= 0


# -- CUDA graph orchestration (the device side is checked in test_gpu.py) ------------------------


class FakeCuda:
    """Stands in for torch.cuda's stream and graph calls, recording what CapturedStep asks."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.capturing = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = self

        class Stream:
            def __init__(self, name: str) -> None:
                self.name = name

            def wait_stream(self, other: Stream) -> None:
                fake.log.append(f"{self.name} waits for {other.name}")

        class Graph:
            def replay(self) -> None:
                fake.log.append("replay")

        def stream(s: Stream) -> Any:
            fake.log.append(f"on {s.name}")
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def graph(g: Graph, stream: Stream) -> Iterator[None]:
            fake.log.append(f"capture on {stream.name}")
            fake.capturing = True
            yield
            fake.capturing = False
            fake.log.append("captured")

        monkeypatch.setattr(torch.cuda, "Stream", lambda device: Stream("side"))
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device: Stream("current"))
        monkeypatch.setattr(torch.cuda, "stream", stream)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device: fake.log.append("sync"))
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)


def test_captured_step_warms_up_on_its_capture_stream_then_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch)
    outputs = iter(range(10))

    def body() -> int:
        fake.log.append("body (captured)" if fake.capturing else "body")
        return next(outputs)

    def finish(out: int) -> str:
        fake.log.append(f"finish {out}")
        return f"done {out}"

    step = torch_exec.CapturedStep(body, torch.device("cuda:0"), finish)
    with pytest.raises(RuntimeError, match="capture"):
        step.replay()
    assert step.capture() >= 0
    assert fake.log == [
        "side waits for current",
        "on side",
        "body",
        "finish 0",
        "body",
        "finish 1",
        "body",
        "finish 2",
        "current waits for side",
        "sync",
        "capture on side",
        "body (captured)",  # no finish: the host-side rest is not part of the graph
        "captured",
        "sync",
    ]
    fake.log.clear()
    assert [step.replay(), step.replay()] == [3, 3]  # the captured output, replayed
    assert fake.log == ["replay", "replay"]


def test_a_backend_failure_names_the_inner_error() -> None:
    from torch._dynamo.exc import BackendCompilerFailed

    def inductor() -> None:
        return None

    inner = RuntimeError("triton: out of shared memory\nrequired 300000")
    failed = BackendCompilerFailed(inductor, inner, None)
    assert torch_exec.describe_compile_error("max-autotune-no-cudagraphs", failed) == (
        "compile failed (mode max-autotune-no-cudagraphs): inductor failed: "
        "RuntimeError: triton: out of shared memory"
    )
