"""ONNX Runtime execution providers: which to register, with which options, whether their
libraries really load, and which provider ran each node. Pure functions of their inputs
(provider lists, library probes, profiled node tables), so the decisions are tested as
data without a GPU (tests/test_ort_providers.py)."""

from __future__ import annotations

import ctypes
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class ProviderError(RuntimeError):
    """The execution providers asked for cannot run here, or the session did not get them."""


class PlacementError(RuntimeError):
    """A GPU run whose heavy nodes onnxruntime placed on the CPU: never time it."""


@dataclass(frozen=True)
class LibraryProbe:
    """Whether an execution provider's shared library loads in this process, and if not
    the loader's reason (e.g. ``libnvinfer.so.10: cannot open shared object file``)."""

    loadable: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"loadable": self.loadable, "reason": self.reason}


@dataclass(frozen=True)
class ProviderPlan:
    """The provider chain to register, in priority order (the CPU provider last), and why
    providers that the request could have used were left out."""

    chain: tuple[str, ...]
    left_out: Mapping[str, str]


@dataclass(frozen=True)
class NodeRun:
    """One node of a session run as onnxruntime's profiler saw it (after fusion and
    partitioning: a TensorRT engine is one node)."""

    name: str
    op: str
    provider: str


def _library_file(stem: str) -> str:
    """``Env::GetRuntimePath() + LIBRARY_PREFIX stem LIBRARY_EXTENSION`` in onnxruntime's
    provider_bridge_ort.cc."""
    if sys.platform == "win32":
        return f"{stem}.dll"
    return f"lib{stem}.dylib" if sys.platform == "darwin" else f"lib{stem}.so"


def probe_tensorrt_libraries(capi_dir: Path | None = None) -> LibraryProbe:
    """Load onnxruntime's TensorRT provider library the way onnxruntime itself does, without
    creating a provider: does the TensorRT provider work in this process?

    ``get_available_providers()`` lists the providers compiled into the build (a
    ``#ifdef USE_TENSORRT`` table in core/providers/get_execution_providers.cc), not the
    ones whose libraries load. onnxruntime loads ``libonnxruntime_providers_shared`` with
    global symbols and then ``libonnxruntime_providers_tensorrt`` from the directory of the
    onnxruntime binary (``ProviderLibrary::Get`` in core/session/provider_bridge_ort.cc;
    ``dlopen(path, RTLD_NOW | RTLD_LOCAL)`` in core/platform/posix/env.cc). That ``dlopen``
    resolves the TensorRT libraries the provider was linked against (``libnvinfer.so.10``,
    ``libnvinfer_plugin.so.10``, ``libnvonnxparser.so.10`` for onnxruntime-gpu 1.18 and
    later) and its CUDA ones, so repeating it here with ctypes (which adds ``RTLD_NOW``)
    answers exactly when onnxruntime would fail, and names the missing library. A library
    that loads stays loaded, as onnxruntime leaves it too."""
    capi = capi_dir if capi_dir is not None else Path(ort.capi.__file__).parent
    provider = capi / _library_file("onnxruntime_providers_tensorrt")
    if not provider.exists():
        return LibraryProbe(False, f"{provider.name} is not in {capi}")
    try:
        ctypes.CDLL(str(capi / _library_file("onnxruntime_providers_shared")), ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(provider), ctypes.RTLD_LOCAL)
    except OSError as error:
        return LibraryProbe(False, str(error))
    return LibraryProbe(True)


def tensorrt_fp32_math(environ: Mapping[str, str]) -> str:
    """The math TensorRT engines built by onnxruntime use for fp32 layers: TensorRT enables
    ``BuilderFlag::kTF32`` by default and onnxruntime's TensorRT provider has no switch for
    it (microsoft/onnxruntime#26029); only ``NVIDIA_TF32_OVERRIDE=0`` turns it off."""
    return "fp32" if environ.get("NVIDIA_TF32_OVERRIDE") == "0" else "tf32"


def choose_providers(
    requested: str,
    device: str,
    available: Sequence[str],
    tensorrt: LibraryProbe | None = None,
    tensorrt_math_conflict: str = "",
    cuda_graphs: bool = False,
) -> ProviderPlan:
    """The provider chain for a run, decided from data only.

    ``requested``: ``auto``, ``tensorrt``, ``cuda`` or ``cpu``; ``available``: what
    ``onnxruntime.get_available_providers()`` lists; ``tensorrt``: whether the TensorRT
    provider's libraries load (``probe_tensorrt_libraries``; ``None``: not probed, counts
    as not loadable); ``tensorrt_math_conflict``: why TensorRT would not run fp32 layers in
    the run's declared math mode (empty: no conflict).

    On the CPU: the CPU provider. On a GPU, ``auto``: TensorRT when its libraries load,
    then CUDA (every node TensorRT does not take stays on the GPU), then the CPU provider
    onnxruntime always has; ``tensorrt`` or ``cuda``: that one and the CPU. Raises
    ``ProviderError`` for a request this onnxruntime cannot serve, and for ``cuda_graphs``
    on the CPU provider (it has no CUDA graphs: never a silent run without them)."""
    cpu, cuda, trt = PROVIDERS["cpu"], PROVIDERS["cuda"], PROVIDERS["tensorrt"]
    if cuda_graphs and (requested == "cpu" or not device.startswith("cuda")):
        raise ProviderError(
            f"CUDA graphs need the CUDA or TensorRT execution provider; --ort-provider "
            f"{requested} on {device} runs on {cpu}, which has none (drop --cuda-graphs)"
        )
    if not device.startswith("cuda"):
        if requested not in ("auto", "cpu"):
            raise ProviderError(f"--ort-provider {requested} needs a GPU device")
        return ProviderPlan((cpu,), {})
    if requested == "cpu":
        raise ProviderError("--ort-provider cpu with a GPU device: use --device cpu")
    version = f"this onnxruntime ({ort.__version__})"

    def missing(name: str) -> ProviderError:
        return ProviderError(
            f"{version} has no {name} provider (available: {', '.join(available)}); "
            "install onnxruntime-gpu for GPU runs"
        )

    trt_problem = ""
    if trt not in available:
        trt_problem = f"not in {version}"
    elif tensorrt is None or not tensorrt.loadable:
        reason = tensorrt.reason if tensorrt is not None else "not probed"
        trt_problem = f"listed by {version}, but its libraries do not load: {reason}"
    elif tensorrt_math_conflict:
        trt_problem = tensorrt_math_conflict
    if requested == "tensorrt":
        if trt not in available:
            raise missing("tensorrt")
        if trt_problem:
            raise ProviderError(f"--ort-provider tensorrt: TensorRT provider {trt_problem}")
        return ProviderPlan((trt, cpu), {})
    if cuda not in available:
        raise missing("cuda" if requested == "cuda" else "tensorrt or cuda")
    if requested == "cuda":
        return ProviderPlan((cuda, cpu), {})
    if trt_problem:
        return ProviderPlan((cuda, cpu), {trt: trt_problem})
    return ProviderPlan((trt, cuda, cpu), {})


def cuda_graph_provider(chain: Sequence[str]) -> str:
    """The provider that captures the CUDA graph of a chain: its first. onnxruntime lets one
    provider capture and requires every node of the graph on it (TensorRT) or every compute
    node (CUDA; shape nodes may stay on the CPU), refusing the session otherwise
    (``InferenceSession::Initialize``, core/session/inference_session.cc)."""
    first = chain[0] if chain else ""
    if first not in (PROVIDERS["tensorrt"], PROVIDERS["cuda"]):
        raise ProviderError(
            f"CUDA graphs need the CUDA or TensorRT execution provider first in the chain, "
            f"not {first or 'an empty chain'} (providers: {', '.join(chain)})"
        )
    return first


def provider_options(
    chain: Sequence[str],
    device_index: int,
    precision: str,
    fp32_math: str,
    *,
    cuda_graphs: bool = False,
    tensorrt_cache: str | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """``(name, options)`` for ``InferenceSession(providers=...)``: the device on the GPU
    providers, fp16 engines for TensorRT fp16 runs, and on CUDA the fp32 math mode set
    explicitly (``use_tf32``, onnxruntime >= 1.18, default 1: TF32 for fp32 MatMul/Gemm
    and cuDNN convolutions; microsoft/onnxruntime#19357, #19426).

    ``cuda_graphs``: graph capture on the chain's first provider (``enable_cuda_graph`` on
    CUDA, ``trt_cuda_graph_enable`` on TensorRT; see :func:`cuda_graph_provider`), and only
    there: the CUDA provider begins a capture at the start of every run while it is enabled
    (``OnRunStart``), whether or not it has nodes.
    ``tensorrt_cache``: a directory where TensorRT keeps the engines it builds (and their
    shape profiles), so that a later session loads them instead of building again."""
    if fp32_math not in ("tf32", "fp32"):
        raise ValueError(f"fp32 math mode {fp32_math!r}: tf32 or fp32")
    capturing = cuda_graph_provider(chain) if cuda_graphs else None
    out: list[tuple[str, dict[str, str]]] = []
    for name in chain:
        options: dict[str, str] = {}
        if name == PROVIDERS["tensorrt"]:
            options = {"device_id": str(device_index)}
            if precision == "fp16":
                options["trt_fp16_enable"] = "1"
            if tensorrt_cache is not None:
                options["trt_engine_cache_enable"] = "1"
                options["trt_engine_cache_path"] = tensorrt_cache
            if name == capturing:
                options["trt_cuda_graph_enable"] = "1"
        elif name == PROVIDERS["cuda"]:
            options = {"device_id": str(device_index), "use_tf32": str(int(fp32_math == "tf32"))}
            if name == capturing:
                options["enable_cuda_graph"] = "1"
        out.append((name, options))
    return out


def check_session_providers(chain: Sequence[str], session_providers: Sequence[str]) -> None:
    """Every provider asked for must be in the session: onnxruntime drops one that fails
    to load with a warning (or, in Python, retries with ``[CUDA, CPU]`` or ``[CPU]`` and
    without the provider options) instead of failing."""
    dropped = [name for name in chain if name not in session_providers]
    if dropped:
        raise ProviderError(
            f"onnxruntime did not register {', '.join(dropped)} (asked for "
            f"{', '.join(chain)}; the session has {', '.join(session_providers)})"
        )


def check_provider_options(
    requested: Sequence[tuple[str, Mapping[str, str]]],
    in_effect: Mapping[str, Mapping[str, str | None]],
) -> None:
    """The options the session reports (``get_provider_options()``, which writes booleans as
    1/0) must be the ones asked for; an option it does not report is not judged."""

    def norm(value: str) -> str:
        return {"true": "1", "false": "0"}.get(value.lower(), value)

    for name, options in requested:
        for key, want in options.items():
            got = in_effect.get(name, {}).get(key)
            if got not in (None, "None") and norm(str(got)) != norm(want):
                raise ProviderError(f"{name} runs with {key}={got}, asked for {want}")


def profile_nodes(events: Iterable[Mapping[str, Any]]) -> list[NodeRun]:
    """The nodes of a profiled run from onnxruntime's profile (``end_profiling()``'s JSON):
    one ``cat: Node`` event named ``<node>_kernel_time`` per executed node, whose args carry
    ``op_name`` and ``provider``."""
    suffix = "_kernel_time"
    return [
        NodeRun(str(e["name"])[: -len(suffix)], str(e["args"]["op_name"]), e["args"]["provider"])
        for e in events
        if e.get("cat") == "Node"
        and str(e.get("name", "")).endswith(suffix)
        and "provider" in e.get("args", {})
    ]


def nodes_by_provider(nodes: Iterable[NodeRun]) -> dict[str, int]:
    return dict(Counter(n.provider for n in nodes))


def ops_by_provider(nodes: Iterable[NodeRun]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = {}
    for n in nodes:
        table.setdefault(n.provider, Counter())[n.op] += 1
    return {provider: dict(sorted(ops.items())) for provider, ops in table.items()}


def is_heavy(op: str) -> bool:
    """Operators that carry a network's FLOPs: the MatMul, Gemm and Conv families (with the
    CPU provider's Fused*/QLinear* variants and contrib MatMulNBits, FusedMatMul, ...) and
    the attention family (Attention, MultiHeadAttention, GroupQueryAttention, ...)."""
    base = op
    for prefix in ("QLinear", "Fused", "Nhwc"):
        base = base.removeprefix(prefix)
    return base.startswith(("MatMul", "Gemm", "Conv")) or "Attention" in op


def heavy_nodes_on_cpu(nodes: Iterable[NodeRun]) -> dict[str, int]:
    """Heavy operators the CPU provider ran, with counts."""
    ops = Counter(n.op for n in nodes if n.provider == PROVIDERS["cpu"] and is_heavy(n.op))
    return dict(sorted(ops.items()))


def check_placement(nodes: Sequence[NodeRun], device: str) -> None:
    """A GPU run must run its heavy nodes on the GPU. Light nodes on the CPU are normal
    (the CUDA provider leaves shape computations there on purpose), so the rule is about
    the operators that carry the FLOPs, not a share of nodes."""
    if not device.startswith("cuda"):
        return
    if not nodes:
        raise PlacementError("the profiled run recorded no nodes: placement unknown")
    heavy = heavy_nodes_on_cpu(nodes)
    if heavy:
        listed = ", ".join(f"{op} x{count}" for op, count in heavy.items())
        raise PlacementError(
            f"a {device} run has heavy nodes on {PROVIDERS['cpu']}: {listed} "
            f"(nodes by provider: {nodes_by_provider(nodes)})"
        )
