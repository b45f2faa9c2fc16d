"""How the ONNX Runtime path executes, without a GPU: CUDA graph capture and TensorRT's
fp16 and engine cache as provider options (data), the CPU provider refused for CUDA graphs,
the one-off cost of the session and its first runs, the execution details a run records,
and which steps the host clock can time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bench.run.loop import HostTimer
from bench.schema.spec import RunSpec
from models import onnx_common
from models.bert import config as bert
from models.bert.onnx import BertOnnx
from models.bert.torch import seeded_text
from models.onnx_common import Binding
from models.onnx_providers import (
    PROVIDERS,
    LibraryProbe,
    ProviderError,
    choose_providers,
    cuda_graph_provider,
    provider_options,
)
from models.ssd.onnx import SsdOnnx

TRT, CUDA, CPU = PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]
GPU_BUILD = [TRT, CUDA, CPU]
LOADS = LibraryProbe(True)
SMALL = bert.BertSettings(
    shape=bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
)


def bert_spec(**kw: Any) -> RunSpec:
    base = RunSpec(workload="bert", backend="onnxruntime", device="cpu", batch=2, seq_len=16)
    return base.replace(**kw)


# -- provider options, from data ------------------------------------------------------------
def test_cuda_graphs_on_the_cuda_provider() -> None:
    assert provider_options((CUDA, CPU), 0, "fp32", "tf32", cuda_graphs=True) == [
        (CUDA, {"device_id": "0", "use_tf32": "1", "enable_cuda_graph": "1"}),
        (CPU, {}),
    ]
    assert provider_options((CUDA, CPU), 1, "fp16", "fp32") == [
        (CUDA, {"device_id": "1", "use_tf32": "0"}),
        (CPU, {}),
    ]


def test_tensorrt_fp16_engine_cache_and_graphs() -> None:
    """TensorRT captures (it comes first); CUDA does not begin a capture of its own."""
    options = provider_options(
        (TRT, CUDA, CPU), 0, "fp16", "fp32", cuda_graphs=True, tensorrt_cache="cache/trt"
    )
    assert options == [
        (
            TRT,
            {
                "device_id": "0",
                "trt_fp16_enable": "1",
                "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": "cache/trt",
                "trt_cuda_graph_enable": "1",
            },
        ),
        (CUDA, {"device_id": "0", "use_tf32": "0"}),
        (CPU, {}),
    ]


def test_tensorrt_fp32_with_its_cache_and_without_graphs() -> None:
    options = provider_options((TRT, CPU), 2, "fp32", "tf32", tensorrt_cache="c")
    assert options == [
        (
            TRT,
            {
                "device_id": "2",
                "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": "c",
            },
        ),
        (CPU, {}),
    ]
    assert provider_options((TRT, CPU), 0, "fp32", "tf32") == [
        (TRT, {"device_id": "0"}),
        (CPU, {}),
    ]


def test_the_capturing_provider_is_the_first_gpu_provider_or_none() -> None:
    assert cuda_graph_provider((TRT, CUDA, CPU)) == TRT
    assert cuda_graph_provider((CUDA, CPU)) == CUDA
    with pytest.raises(ProviderError, match="CUDA or TensorRT .* not CPUExecutionProvider"):
        cuda_graph_provider((CPU,))
    with pytest.raises(ProviderError, match="not an empty chain"):
        cuda_graph_provider(())
    with pytest.raises(ProviderError, match="not CPUExecutionProvider"):
        provider_options((CPU,), 0, "fp32", "fp32", cuda_graphs=True)
    assert provider_options((CPU,), 0, "fp32", "fp32") == [(CPU, {})]


def test_cuda_graphs_refuse_the_cpu_provider_in_the_chain_choice() -> None:
    message = (
        "CUDA graphs need the CUDA or TensorRT execution provider; --ort-provider cpu on "
        "cuda:0 runs on CPUExecutionProvider, which has none (drop --cuda-graphs)"
    )
    with pytest.raises(ProviderError) as caught:
        choose_providers("cpu", "cuda:0", GPU_BUILD, LOADS, cuda_graphs=True)
    assert str(caught.value) == message
    with pytest.raises(ProviderError, match="--ort-provider auto on cpu runs on CPU"):
        choose_providers("auto", "cpu", GPU_BUILD, LOADS, cuda_graphs=True)
    # a GPU chain is unchanged by the request
    plan = choose_providers("auto", "cuda:0", GPU_BUILD, LOADS, cuda_graphs=True)
    assert plan.chain == (TRT, CUDA, CPU)
    assert choose_providers("cuda", "cuda:0", GPU_BUILD, cuda_graphs=True).chain == (CUDA, CPU)


def test_a_workload_refuses_cuda_graphs_on_the_cpu_provider(tmp_path: Path) -> None:
    """device cuda with --ort-provider cpu: the spec allows it, the workload does not."""
    spec = RunSpec(
        workload="ssd",
        backend="onnxruntime",
        device="cuda:0",
        ort_provider="cpu",
        cuda_graphs=True,
    )
    with pytest.raises(ProviderError, match="--ort-provider cpu on cuda:0 runs on CPUExecution"):
        SsdOnnx(spec, cache_dir=tmp_path)


# -- what a GPU session is asked for, on a faked GPU build -------------------------------------
@pytest.fixture
def gpu_build(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_BUILD)
    monkeypatch.setattr(onnx_common, "probe_tensorrt_libraries", lambda: LOADS)
    return monkeypatch


def test_a_graph_session_on_tensorrt_is_asked_for_the_right_options(
    tmp_path: Path, gpu_build: pytest.MonkeyPatch
) -> None:
    """The session onnxruntime would create: TensorRT fp16 with its engine cache beside the
    exported models and the graph capture, no profiling; onnxruntime's refusal of a graph
    that TensorRT takes only in part becomes a ProviderError that says what to do."""
    asked: dict[str, Any] = {}
    refusal = (
        "This session cannot use the CUDA Graph feature as requested by the user as all the "
        "graph nodes have not been assigned to TensorrtExecutionProvider"
    )

    def session(path: str, sess_options: Any, providers: Any, enable_fallback: int) -> Any:
        asked.update(providers=providers, profiling=sess_options.enable_profiling)
        raise RuntimeError(refusal)

    gpu_build.setattr(ort, "InferenceSession", session)
    spec = bert_spec(device="cuda:0", precision="fp16", cuda_graphs=True)
    wl = BertOnnx(spec, cache_dir=tmp_path, settings=SMALL)
    cache = tmp_path / "tensorrt" / f"onnxruntime-{ort.__version__}"
    assert wl.plan.chain == (TRT, CUDA, CPU) and wl.tensorrt_cache == cache
    with pytest.raises(ProviderError) as caught:
        wl.session(tmp_path / "model.onnx")
    assert str(caught.value) == (
        f"onnxruntime could not create a session on {TRT}, {CUDA}, {CPU}: {refusal} (a CUDA "
        "graph needs the whole model on one provider: a model TensorRT takes only in part "
        "can run with --ort-provider cuda)"
    )
    assert asked == {
        "providers": [
            (
                TRT,
                {
                    "device_id": "0",
                    "trt_fp16_enable": "1",
                    "trt_engine_cache_enable": "1",
                    "trt_engine_cache_path": str(cache),
                    "trt_cuda_graph_enable": "1",
                },
            ),
            (CUDA, {"device_id": "0", "use_tf32": "0"}),
            (CPU, {}),
        ],
        "profiling": False,
    }
    assert cache.is_dir()


def test_a_cuda_chain_has_no_tensorrt_cache(tmp_path: Path, gpu_build: pytest.MonkeyPatch) -> None:
    wl = BertOnnx(bert_spec(device="cuda:0", ort_provider="cuda"), cache_dir=tmp_path)
    assert wl.plan.chain == (CUDA, CPU) and wl.tensorrt_cache is None


# -- which steps the host clock can time --------------------------------------------------------
def test_step_timers(tmp_path: Path, gpu_build: pytest.MonkeyPatch) -> None:
    """A step that is the session's run alone has finished when it returns (onnxruntime
    synchronizes its stream at the end of the run); SSD's post-processing in torch, queued
    after it on a GPU, has not: no per-step timing there."""

    def clock() -> float:
        return 0.0

    ssd_gpu = RunSpec(workload="ssd", backend="onnxruntime", device="cuda:0", ort_provider="cuda")
    assert SsdOnnx(ssd_gpu, cache_dir=tmp_path).step_timer(clock) is None
    ssd_cpu = SsdOnnx(ssd_gpu.replace(device="cpu", ort_provider="auto"), cache_dir=tmp_path)
    bert_gpu = BertOnnx(bert_spec(device="cuda:0"), cache_dir=tmp_path, settings=SMALL)
    bert_cpu = BertOnnx(bert_spec(), cache_dir=tmp_path, settings=SMALL)
    for wl in (ssd_cpu, bert_gpu, bert_cpu):
        timer = wl.step_timer(clock)
        assert isinstance(timer, HostTimer) and timer.kind == "host_clock"
        assert timer.clock is clock


# -- a CPU run through the workload ---------------------------------------------------------------
class CountingClock:
    """``time.perf_counter`` as onnx_common sees it: each reading one second later."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_a_cpu_run_records_its_execution_and_engine_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine_build_s holds three timed pieces: the session's creation, its first run (the
    check) and the first run of the step's binding, not the source model's reference."""
    monkeypatch.setattr(onnx_common, "time", CountingClock())
    bound_runs: list[tuple[int, ...]] = []
    run = Binding.run

    def counting_run(self: Binding, inputs_written: bool = False) -> None:
        bound_runs.append(tuple(self.inputs["input_ids"].shape))
        run(self, inputs_written)

    monkeypatch.setattr(Binding, "run", counting_run)
    wl = BertOnnx(bert_spec(batch=5), cache_dir=tmp_path, settings=SMALL)
    wl.setup()
    assert wl.one_off_s == {"engine_build_s": 3.0}
    assert bound_runs == [(5, 16)]  # once in setup, at the step's shape
    assert wl.execution_details() == {
        "providers": [CPU],
        "provider_options": {CPU: {}},
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "cuda_graph": False,
        "cuda_graph_provider": None,
        "io_binding": True,
        "outputs_preallocated": True,
        "tensorrt_engine_cache": False,
    }
    assert wl.verification["through"] == "session.run"
    assert wl.session_options["enable_profiling"] is True
    assert wl.step().shape == (5, 2)


def test_the_engine_build_is_timed_for_real(tmp_path: Path) -> None:
    wl = BertOnnx(bert_spec(), cache_dir=tmp_path, settings=SMALL)
    t0 = time.perf_counter()
    wl.setup()
    assert 0 < wl.one_off_s["engine_build_s"] < time.perf_counter() - t0


def test_every_output_must_be_bound_to_a_preallocated_tensor() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "two_outputs", [x], [y, z], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=[CPU])
    inputs = {"x": torch.tensor([[1.0, -2.0, 3.0, -4.0]])}
    with pytest.raises(ValueError, match=r"outputs \['z'\] are not bound"):
        Binding(session, torch.device("cpu"), inputs, {"y": torch.empty(1, 4)})
    outputs = {"y": torch.empty(1, 4), "z": torch.empty(1, 4)}
    binding = Binding(session, torch.device("cpu"), inputs, outputs)
    binding.run()
    assert outputs["z"].tolist() == [[1.0, 0.0, 3.0, 0.0]]


# -- the graph path's own steps, on the CPU ------------------------------------------------------
@pytest.mark.parametrize("batch", [2, 5])
def test_a_graph_run_checks_through_the_step_binding_and_restores_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """What a cuda_graphs run does around onnxruntime's capture, on the CPU provider (which
    cannot capture; the spec only allows cuda_graphs on a GPU, so it is set afterwards): the
    session is not profiled, the check runs through the step's own binding (its 3 rows
    cut to the batch of 2, or repeated to fill 5), the step's batch is written back, and
    the step then computes what a plain run computes."""
    plain = BertOnnx(bert_spec(batch=batch), cache_dir=tmp_path, settings=SMALL)
    plain.setup()
    want = plain.step().clone()

    wl = BertOnnx(bert_spec(batch=batch), cache_dir=tmp_path, settings=SMALL)
    spec = wl.spec
    object.__setattr__(spec, "cuda_graphs", True)  # as on a GPU; the CPU cannot capture
    monkeypatch.setattr(onnx_common, "cuda_graph_provider", lambda chain: chain[0])
    real_options = onnx_common.provider_options
    monkeypatch.setattr(
        onnx_common,
        "provider_options",
        lambda *args, **kw: real_options(*args, **{**kw, "cuda_graphs": False}),
    )
    monkeypatch.setattr(onnx_common, "time", CountingClock())
    bound_runs: list[bool] = []
    run = Binding.run

    def counting_run(self: Binding, inputs_written: bool = False) -> None:
        bound_runs.append(inputs_written)
        run(self, inputs_written)

    monkeypatch.setattr(Binding, "run", counting_run)
    wl.setup()
    assert wl.session_options["enable_profiling"] is False
    assert wl.one_off_s == {"engine_build_s": 2.0}  # session; the runs that capture
    assert bound_runs == [True, False, False]  # GRAPH_SETUP_RUNS; the copy waited for once
    rows = min(batch, 3)
    assert wl.verification["through"] == "the step's IO binding"
    assert wl.verification["outputs"]["logits"]["relative_l2_error"] < 1e-4
    assert wl.placement == {
        "method": (
            "not profiled (the first run captures the CUDA graph): onnxruntime created the "
            f"session only with every compute node on {CPU}"
        ),
        "nodes_by_provider": {},
        "ops_by_provider": {},
    }
    host = seeded_text(spec, SMALL.shape, batch)
    for name, tensor in wl.binding.inputs.items():
        assert torch.equal(tensor, torch.from_numpy(getattr(host, name)))
    assert torch.equal(wl.step(), want)
    details = wl.execution_details()
    assert details["cuda_graph"] is True and details["cuda_graph_provider"] == CPU
    with pytest.raises(RuntimeError, match="runs only the step's own binding"):
        wl.run_batch(dict(wl.binding.inputs), {"logits": torch.empty(batch, 2)})
    assert rows == len(wl._run_bound({n: getattr(host, n)[:rows] for n in wl.input_names})[0])


def test_the_checked_rows_come_back_from_the_bound_run(tmp_path: Path) -> None:
    """The check's rows, repeated to fill the step's batch, give the outputs a session run
    on those rows alone gives."""
    wl = BertOnnx(bert_spec(batch=5), cache_dir=tmp_path, settings=SMALL)
    wl.setup()
    host = seeded_text(wl.spec.replace(seed=7), SMALL.shape, 3)
    check = {n: getattr(host, n) for n in wl.input_names}
    (got,) = wl._run_bound(check)
    (want,) = wl.binding.session.run(["logits"], check)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    filled = wl.binding.inputs["input_ids"].numpy()
    assert (filled[3:] == check["input_ids"][:2]).all()  # rows 0 and 1 again
