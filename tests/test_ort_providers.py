"""ONNX Runtime execution providers, without a GPU: the provider chain decided from data
(provider lists, TensorRT library probes), the provider options (fp32 math on CUDA), the
session's own provider list, the node placement rule, and, for real on this CPU build, the
TensorRT library probe and the profiling that tells which provider ran each node."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.schema.spec import RunSpec
from models import onnx_common
from models.bert import config as bert
from models.bert.onnx import BertOnnx
from models.onnx_common import TF32_TOLERANCE, TOLERANCES, verification_tolerance
from models.onnx_providers import (
    PROVIDERS,
    LibraryProbe,
    NodeRun,
    PlacementError,
    ProviderError,
    check_placement,
    check_provider_options,
    check_session_providers,
    choose_providers,
    heavy_nodes_on_cpu,
    is_heavy,
    nodes_by_provider,
    ops_by_provider,
    probe_tensorrt_libraries,
    profile_nodes,
    provider_options,
    tensorrt_fp32_math,
)

TRT, CUDA, CPU = PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]
GPU_BUILD = [TRT, CUDA, CPU]
CUDA_BUILD = [CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]
LOADS = LibraryProbe(True)
NO_NVINFER = LibraryProbe(False, "libnvinfer.so.10: cannot open shared object file")
SMALL = bert.BertSettings(
    shape=bert.BertShape(hidden=64, layers=2, heads=2, intermediate=128, max_positions=64)
)


def _profiles() -> set[Path]:
    """The onnxruntime profiles this process has in the temporary directory (named with its
    pid: other processes, parallel test workers among them, write theirs there too)."""
    return set(Path(tempfile.gettempdir()).glob(f"gpu-bench-ort-profile-{os.getpid()}-*"))


# -- the provider chain, from data --------------------------------------------------------


def test_auto_on_a_gpu_with_tensorrt_loadable() -> None:
    plan = choose_providers("auto", "cuda:0", GPU_BUILD, LOADS)
    assert plan.chain == (TRT, CUDA, CPU) and not plan.left_out


def test_auto_with_tensorrt_listed_but_not_loadable_keeps_cuda() -> None:
    """The case that used to land on the CPU: TensorRT listed, its libraries absent."""
    plan = choose_providers("auto", "cuda:0", GPU_BUILD, NO_NVINFER)
    assert plan.chain == (CUDA, CPU)
    assert "do not load: libnvinfer.so.10" in plan.left_out[TRT]
    unprobed = choose_providers("auto", "cuda:1", GPU_BUILD, None)
    assert unprobed.chain == (CUDA, CPU) and "not probed" in unprobed.left_out[TRT]


def test_auto_with_only_cuda() -> None:
    plan = choose_providers("auto", "cuda:0", CUDA_BUILD)
    assert plan.chain == (CUDA, CPU) and "not in this onnxruntime" in plan.left_out[TRT]


def test_auto_on_the_cpu() -> None:
    for available in (GPU_BUILD, CUDA_BUILD, CPU_BUILD):
        assert choose_providers("auto", "cpu", available, LOADS).chain == (CPU,)
    assert choose_providers("cpu", "cpu", CPU_BUILD).chain == (CPU,)


def test_auto_on_a_gpu_needs_a_gpu_build() -> None:
    with pytest.raises(ProviderError, match="no tensorrt or cuda provider.*onnxruntime-gpu"):
        choose_providers("auto", "cuda:0", CPU_BUILD)


def test_auto_leaves_tensorrt_out_when_it_cannot_honour_the_fp32_math() -> None:
    plan = choose_providers("auto", "cuda:0", GPU_BUILD, LOADS, "builds fp32 layers in tf32")
    assert plan.chain == (CUDA, CPU) and plan.left_out[TRT] == "builds fp32 layers in tf32"


def test_explicit_requests() -> None:
    assert choose_providers("tensorrt", "cuda:0", GPU_BUILD, LOADS).chain == (TRT, CPU)
    assert choose_providers("cuda", "cuda:0", GPU_BUILD, LOADS).chain == (CUDA, CPU)
    assert choose_providers("cuda", "cuda:0", CUDA_BUILD).chain == (CUDA, CPU)
    with pytest.raises(ProviderError, match="TensorRT provider listed .* do not load: libnvinfer"):
        choose_providers("tensorrt", "cuda:0", GPU_BUILD, NO_NVINFER)
    with pytest.raises(ProviderError, match=r"has no tensorrt provider \(available: CUDA"):
        choose_providers("tensorrt", "cuda:0", CUDA_BUILD, LOADS)
    with pytest.raises(ProviderError, match="has no cuda provider"):
        choose_providers("cuda", "cuda:0", CPU_BUILD)
    with pytest.raises(ProviderError, match="TensorRT provider builds fp32 layers in tf32"):
        choose_providers("tensorrt", "cuda:0", GPU_BUILD, LOADS, "builds fp32 layers in tf32")
    with pytest.raises(ProviderError, match="use --device cpu"):
        choose_providers("cpu", "cuda:0", GPU_BUILD, LOADS)
    for name in ("tensorrt", "cuda"):
        with pytest.raises(ProviderError, match="needs a GPU device"):
            choose_providers(name, "cpu", GPU_BUILD, LOADS)


# -- provider options and fp32 math -------------------------------------------------------
def test_cuda_gets_the_declared_fp32_math_explicitly() -> None:
    chain = (TRT, CUDA, CPU)
    assert provider_options(chain, 1, "fp32", "tf32") == [
        (TRT, {"device_id": "1"}),
        (CUDA, {"device_id": "1", "use_tf32": "1"}),
        (CPU, {}),
    ]
    fp32 = dict(provider_options((CUDA, CPU), 0, "fp32", "fp32"))
    assert fp32[CUDA] == {"device_id": "0", "use_tf32": "0"}
    fp16 = dict(provider_options(chain, 0, "fp16", "fp32"))
    assert fp16[TRT] == {"device_id": "0", "trt_fp16_enable": "1"}
    with pytest.raises(ValueError, match="tf32 or fp32"):
        provider_options(chain, 0, "fp32", "bf16")


def test_tf32_runs_are_verified_with_a_reduced_mantissa_tolerance() -> None:
    assert verification_tolerance("fp32", "fp32") == TOLERANCES["fp32"] == 1e-4
    assert verification_tolerance("fp32", "tf32") == TF32_TOLERANCE == TOLERANCES["fp16"]
    assert verification_tolerance("fp16", "fp32") == verification_tolerance("fp16", "tf32")


def test_tensorrt_fp32_math_is_tf32_unless_overridden() -> None:
    assert tensorrt_fp32_math({}) == "tf32"
    assert tensorrt_fp32_math({"NVIDIA_TF32_OVERRIDE": "1"}) == "tf32"
    assert tensorrt_fp32_math({"NVIDIA_TF32_OVERRIDE": "0"}) == "fp32"


def test_the_session_must_have_every_provider_asked_for() -> None:
    check_session_providers((TRT, CUDA, CPU), [TRT, CUDA, CPU])
    with pytest.raises(ProviderError, match=r"did not register TensorrtExecutionProvider \("):
        check_session_providers((TRT, CUDA, CPU), [CUDA, CPU])
    with pytest.raises(ProviderError, match="did not register CUDAExecutionProvider"):
        check_session_providers((CUDA, CPU), [CPU])


def test_provider_options_in_effect_must_match() -> None:
    asked = [(CUDA, {"device_id": "0", "use_tf32": "0"}), (CPU, {})]
    check_provider_options(asked, {CUDA: {"device_id": "0", "use_tf32": "0"}})
    check_provider_options(asked, {CUDA: {"device_id": "0", "use_tf32": "False"}})
    check_provider_options(asked, {CUDA: {"device_id": "0"}})  # not reported: not judged
    with pytest.raises(ProviderError, match="use_tf32=1, asked for 0"):
        check_provider_options(asked, {CUDA: {"device_id": "0", "use_tf32": "1"}})


# -- node placement, from data --------------------------------------------------------------
def _nodes(*rows: tuple[str, str]) -> list[NodeRun]:
    return [NodeRun(f"n{i}", op, provider) for i, (op, provider) in enumerate(rows)]


def test_heavy_operators() -> None:
    heavy = ["MatMul", "Gemm", "Conv", "ConvTranspose", "FusedConv", "FusedMatMul", "FusedGemm"]
    heavy += ["QLinearMatMul", "QLinearConv", "MatMulNBits", "MatMulInteger"]
    heavy += ["Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"]
    light = ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Softmax", "Relu", "Add"]
    light += ["SkipLayerNormalization", "LayerNormalization", "BiasGelu", "MemcpyToHost"]
    assert all(is_heavy(op) for op in heavy)
    assert not any(is_heavy(op) for op in light)


def test_heavy_nodes_on_the_cpu_fail_a_gpu_run() -> None:
    # fused BERT on [TensorRT, CPU]: the contrib ops TensorRT does not take land on the CPU
    nodes = _nodes(
        ("TRTKernel_graph_0", TRT),
        ("EmbedLayerNormalization", CPU),
        ("Attention", CPU),
        ("Attention", CPU),
        ("SkipLayerNormalization", CPU),
        ("MatMul", CPU),
    )
    with pytest.raises(PlacementError) as caught:
        check_placement(nodes, "cuda:0")
    message = str(caught.value)
    assert "heavy nodes on CPUExecutionProvider: Attention x2, MatMul x1" in message
    assert "'TensorrtExecutionProvider': 1" in message
    assert heavy_nodes_on_cpu(nodes) == {"Attention": 2, "MatMul": 1}


def test_light_nodes_on_the_cpu_are_normal_for_a_gpu_run() -> None:
    nodes = _nodes(
        ("Shape", CPU),
        ("Gather", CPU),
        ("MemcpyToHost", CUDA),
        ("Attention", CUDA),
        ("MatMul", CUDA),
        ("Conv", CUDA),
    )
    check_placement(nodes, "cuda:0")
    assert nodes_by_provider(nodes) == {CPU: 2, CUDA: 4}
    assert ops_by_provider(nodes)[CPU] == {"Gather": 1, "Shape": 1}


def test_a_cpu_run_may_run_everything_on_the_cpu() -> None:
    check_placement(_nodes(("Conv", CPU), ("MatMul", CPU)), "cpu")


def test_a_gpu_run_without_placement_is_refused() -> None:
    with pytest.raises(PlacementError, match="no nodes"):
        check_placement([], "cuda:0")


def test_profile_nodes_reads_node_events_only() -> None:
    events: list[dict[str, Any]] = [
        {"cat": "Session", "name": "session_initialization", "args": {}},
        {"cat": "Node", "name": "mm_fence_before", "args": {"op_name": "MatMul"}},
        {
            "cat": "Node",
            "name": "mm_kernel_time",
            "args": {"op_name": "MatMul", "provider": CUDA},
        },
        {"cat": "Node", "name": "relu_kernel_time", "args": {"op_name": "Relu", "provider": CPU}},
        {"cat": "Session", "name": "model_run", "args": {}},
    ]
    assert profile_nodes(events) == [NodeRun("mm", "MatMul", CUDA), NodeRun("relu", "Relu", CPU)]


# -- for real on this CPU build ---------------------------------------------------------------
def _small_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2"),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "small", [x], [y], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def test_profiling_gives_the_node_placement_on_this_build(tmp_path: Path) -> None:
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(_small_model(), opts, providers=[CPU])
    session.run(None, {"x": np.ones((3, 8), np.float32)})
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = profile_nodes(events)
    assert {n.name: (n.op, n.provider) for n in nodes} == {
        "mm1": ("MatMul", CPU),
        "relu": ("Relu", CPU),
        "mm2": ("MatMul", CPU),
        "softmax": ("Softmax", CPU),
    }
    check_placement(nodes, "cpu")
    with pytest.raises(PlacementError, match="MatMul x2"):
        check_placement(nodes, "cuda:0")  # these placements on a GPU run: refused
    # profiling stops at end_profiling(): later runs are not profiled
    session.run(None, {"x": np.ones((3, 8), np.float32)})
    assert session.end_profiling() == ""


def test_a_workload_records_providers_and_nodes(tmp_path: Path) -> None:
    spec = RunSpec(
        workload="bert", backend="onnxruntime", device="cpu", batch=2, seq_len=16, warmup=0
    )
    wl = BertOnnx(spec, cache_dir=tmp_path, settings=SMALL)
    before = _profiles()
    wl.setup()
    details = wl.details()
    assert details["provider"] == CPU and details["providers"] == [CPU]
    assert details["providers_requested"] == [CPU] and details["fp32_math"] == "fp32"
    assert details["tensorrt_libraries"] is None  # not probed for a CPU run
    counts, ops = details["nodes_by_provider"], details["placement"]["ops_by_provider"]
    assert list(counts) == [CPU] and counts[CPU] == sum(ops[CPU].values()) > 0
    assert ops[CPU]["Attention"] == 2  # the fused graph's nodes, as the session ran them
    assert _profiles() == before
    assert wl.step().shape == (2, 2)


def test_a_dropped_provider_fails_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This CPU build drops a CUDA provider it is asked for with only a warning: the
    session must refuse instead of running on the CPU."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: CUDA_BUILD)
    spec = RunSpec(workload="bert", backend="onnxruntime", device="cuda:0", batch=2)
    wl = BertOnnx(spec, cache_dir=tmp_path, settings=SMALL)
    assert wl.plan.chain == (CUDA, CPU) and wl.fp32_math == bert.INFO.fp32_math["onnxruntime"]
    model = tmp_path / "small.onnx"
    model.write_bytes(_small_model())
    before = _profiles()
    with (
        pytest.warns(UserWarning, match="not in available provider names"),
        pytest.raises(ProviderError, match="did not register CUDAExecutionProvider"),
    ):
        wl.session(model)
    gc.collect()  # the refused session is gone, and left no profile behind
    assert _profiles() == before


def test_a_session_that_fails_to_load_leaves_no_profile(tmp_path: Path) -> None:
    spec = RunSpec(workload="bert", backend="onnxruntime", device="cpu", batch=2)
    wl = BertOnnx(spec, cache_dir=tmp_path, settings=SMALL)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    before = _profiles()
    with pytest.raises(Exception, match="INVALID_PROTOBUF") as caught:
        wl.session(bad)
    assert not isinstance(caught.value, ProviderError)  # a bad model is not a provider problem
    gc.collect()
    assert _profiles() == before


@pytest.mark.parametrize(
    ("precision", "override", "declared", "chain"),
    [
        ("fp32", None, "fp32", (CUDA, CPU)),  # TensorRT would run fp32 layers in TF32
        ("fp32", "0", "fp32", (TRT, CUDA, CPU)),  # ... unless NVIDIA_TF32_OVERRIDE=0
        ("fp32", None, "tf32", (TRT, CUDA, CPU)),
        ("fp32", "0", "tf32", (CUDA, CPU)),
        ("fp16", None, "fp32", (TRT, CUDA, CPU)),  # the rule is about fp32 runs
    ],
)
def test_workload_plan_on_a_gpu_build(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    override: str | None,
    declared: str,
    chain: tuple[str, ...],
) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_BUILD)
    monkeypatch.setattr(onnx_common, "probe_tensorrt_libraries", lambda: LOADS)
    monkeypatch.setattr(BertOnnx, "declared_fp32_math", lambda self: declared)
    if override is None:
        monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    else:
        monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", override)
    spec = RunSpec(workload="bert", backend="onnxruntime", device="cuda:0", precision=precision)
    wl = BertOnnx(spec, cache_dir=tmp_path, settings=SMALL)
    assert wl.plan.chain == chain and wl.fp32_math == declared
    assert (TRT in wl.plan.left_out) == (TRT not in chain)
    assert dict(provider_options(chain, 0, precision, declared))[CUDA]["use_tf32"] == str(
        int(declared == "tf32")
    )


# -- the TensorRT library probe, for real --------------------------------------------------------
def test_this_build_has_no_tensorrt_library() -> None:
    probe = probe_tensorrt_libraries()
    assert TRT not in ort.get_available_providers()
    assert not probe.loadable and "libonnxruntime_providers_tensorrt.so is not in" in probe.reason


@pytest.fixture()
def fake_capi(tmp_path: Path) -> Iterator[Path]:
    """A stand-in for onnxruntime-gpu's capi directory, built with the C compiler: a
    providers_shared library exporting Provider_GetHost, and a TensorRT provider library
    that calls it (left undefined, as in the real one) and needs libnvinfer.so.10, found
    through RUNPATH $ORIGIN."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    capi = tmp_path / "capi"
    capi.mkdir()
    sources = {
        "shared.c": "void* Provider_GetHost(void) { return 0; }\n",
        "nvinfer.c": "int nvinfer_version(void) { return 10; }\n",
        "provider.c": (
            "void* Provider_GetHost(void);\nint nvinfer_version(void);\n"
            "int GetProvider(void) { return Provider_GetHost() ? 0 : nvinfer_version(); }\n"
        ),
    }
    for name, text in sources.items():
        (tmp_path / name).write_text(text)

    def build(out: str, source: str, *flags: str) -> None:
        cmd = [cc, "-shared", "-fPIC", "-o", str(capi / out), str(tmp_path / source), *flags]
        subprocess.run(cmd, check=True, capture_output=True)

    build("libonnxruntime_providers_shared.so", "shared.c")
    build("libnvinfer.so.10", "nvinfer.c", "-Wl,-soname,libnvinfer.so.10")
    build(
        "libonnxruntime_providers_tensorrt.so",
        "provider.c",
        f"-L{capi}",
        "-l:libnvinfer.so.10",
        "-Wl,-rpath,$ORIGIN",
    )
    yield capi


def _probe_in_a_fresh_process(capi: Path) -> LibraryProbe:
    """The probe in its own interpreter: a library loaded once stays loaded (and satisfies
    later loads by its soname), so each case needs a process of its own."""
    code = (
        "import json, sys; from pathlib import Path; "
        "from models.onnx_providers import probe_tensorrt_libraries as p; "
        "print(json.dumps(p(Path(sys.argv[1])).as_dict()))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code, str(capi)], cwd=root, check=True, capture_output=True
    )
    return LibraryProbe(**json.loads(out.stdout.decode().strip().splitlines()[-1]))


def test_probe_loads_a_complete_tensorrt_provider(fake_capi: Path) -> None:
    assert _probe_in_a_fresh_process(fake_capi) == LibraryProbe(True)


def test_probe_names_the_missing_tensorrt_library(fake_capi: Path) -> None:
    (fake_capi / "libnvinfer.so.10").unlink()
    probe = _probe_in_a_fresh_process(fake_capi)
    assert not probe.loadable
    assert "libnvinfer.so.10: cannot open shared object file" in probe.reason


def test_probe_loads_providers_shared_first_as_onnxruntime_does(fake_capi: Path) -> None:
    """Without the providers_shared library loaded with global symbols, the provider's
    reference to Provider_GetHost cannot bind (RTLD_NOW): the probe must mirror that."""
    (fake_capi / "libonnxruntime_providers_shared.so").unlink()
    probe = _probe_in_a_fresh_process(fake_capi)
    assert not probe.loadable and "libonnxruntime_providers_shared.so" in probe.reason
