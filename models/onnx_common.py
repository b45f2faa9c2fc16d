"""The ONNX Runtime path: export from PyTorch into a cache, verify before timing, build a
session on the best execution provider, and run it through IO binding.

Providers on a GPU: TensorRT when its libraries really load, then CUDA, then the CPU; the
session must register every provider asked for, the CUDA provider gets the workload's
declared fp32 math (``use_tf32``), and the verification run is profiled to record which
provider ran each node: a GPU run whose heavy nodes landed on the CPU fails before timing.
The decisions live in models/onnx_providers.py.

With ``spec.cuda_graphs`` the chain's first provider captures the session's graph and
replays it (onnxruntime's ``enable_cuda_graph`` / ``trt_cuda_graph_enable``): it replays on
the device addresses it captured, so every input and output is bound to a tensor allocated
once (``Binding``), and the first run of the session is the step's binding itself. TensorRT
keeps its engines in a cache next to the exported models, so that they are built once.

Inference only. Models are exported from this project's PyTorch networks (same seeded
weights), so the exported model can be checked against its source on the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from bench.run.envinfo import PROJECT_ROOT
from bench.run.loop import HostTimer, StepTimer
from bench.run.workload import Workload
from bench.schema.spec import RunSpec
from models.onnx_providers import (
    PROVIDERS,
    LibraryProbe,
    ProviderError,
    check_placement,
    check_provider_options,
    check_session_providers,
    choose_providers,
    cuda_graph_provider,
    nodes_by_provider,
    ops_by_provider,
    probe_tensorrt_libraries,
    profile_nodes,
    provider_options,
    tensorrt_fp32_math,
)

OPSET = 17
DEFAULT_CACHE = PROJECT_ROOT / "results" / "cache" / "onnx"
#: Largest relative error ||ort - source|| / ||source|| (L2 over each output) allowed by
#: the check before timing. fp32 differences come from kernel choice and summation order
#: (typically 1e-6); fp16 storage alone costs about 1e-3.
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2}
#: The same for fp32 runs whose matrix products use TF32 tensor cores: inputs rounded to a
#: 10-bit mantissa, as fp16's, with fp32 storage and accumulation, so at most fp16's error.
TF32_TOLERANCE = TOLERANCES["fp16"]
#: The session's graph optimization level (``SessionOptions.graph_optimization_level``).
GRAPH_OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"
#: Runs of the step's binding in set-up with CUDA graphs. A provider captures after one or
#: two regular runs (``min_num_runs_before_cuda_graph_capture_``: 1 or 2 by provider and
#: version), replaying from then on; recent onnxruntime makes those runs inside the first
#: ``Run()``. Three runs capture on any of them, and the last is a replay.
GRAPH_SETUP_RUNS = 3


class VerificationError(RuntimeError):
    """The exported model does not compute what its source does: never time it."""


def cache_path(cache_dir: Path, workload: str, precision: str, **variant: Any) -> Path:
    """``<workload>-torch-opset<N>-<precision>-<hash of what else defines the model>.onnx``."""
    text = ",".join(f"{k}={variant[k]}" for k in sorted(variant))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return cache_dir / f"{workload}-torch-opset{OPSET}-{precision}-{digest}.onnx"


def export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """TorchScript-based export (``dynamo=False``): dynamic axes by name, any opset; written
    to a temporary name first so that an interrupted export never poisons the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(tmp, path)


def verification_tolerance(precision: str, fp32_math: str) -> float:
    """The largest relative error the check before timing allows: by precision, and for
    fp32 by the math mode the providers run it in (``tf32`` or ``fp32``)."""
    return TF32_TOLERANCE if precision == "fp32" and fp32_math == "tf32" else TOLERANCES[precision]


def output_error(
    got: np.ndarray, want: np.ndarray, precision: str, tolerance: float | None = None
) -> dict[str, float]:
    """Relative L2 error of one output against its source, the largest absolute error,
    and the tolerance (by default the precision's)."""
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    diff = got64 - want64
    scale = float(np.linalg.norm(want64)) or 1.0
    return {
        "relative_l2_error": float(np.linalg.norm(diff)) / scale,
        "max_abs_error": float(np.abs(diff).max()),
        "max_abs_source": float(np.abs(want64).max()),
        "tolerance": TOLERANCES[precision] if tolerance is None else tolerance,
    }


def onnxruntime_info(device: str) -> dict[str, Any]:
    from models.torch_common import torch_info

    return {
        **torch_info(device),  # the exporter, and the device facts for telemetry matching
        "framework": "onnxruntime",
        "onnxruntime_version": ort.__version__,
        "onnxruntime_providers_available": ort.get_available_providers(),
        "onnx_opset": OPSET,
    }


def end_profiling(session: ort.InferenceSession) -> list[dict[str, Any]]:
    """Stop a session's profiling and return its events, deleting the profile file
    (onnxruntime writes it here, or when a session still profiling is destroyed)."""
    profile = session.end_profiling()
    if not profile:
        return []
    path = Path(profile)
    try:
        events: list[dict[str, Any]] = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    return events


class OnnxWorkload(Workload):
    """Base for ONNX Runtime workloads: subclasses say how to build the source model,
    its example inputs, and what the timed step does with the outputs."""

    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    #: The step queues device work of its own after the session's run (post-processing in
    #: torch), which has not finished when ``step()`` returns.
    step_queues_device_work: bool = False
    #: The timed step's binding, made by ``setup()``.
    binding: Binding
    #: The model file the session loads, set by ``setup()``.
    model_path: Path

    def __init__(self, spec: RunSpec, cache_dir: Path = DEFAULT_CACHE) -> None:
        super().__init__(spec)
        if spec.mode != "infer":
            raise ValueError("the onnxruntime backend runs inference only")
        if spec.precision not in TOLERANCES:
            raise ValueError(f"{spec.precision} is not supported on onnxruntime: fp32 or fp16")
        self.cache_dir = cache_dir
        self.device = torch.device(spec.device)
        if spec.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 on onnxruntime needs a GPU")
        gpu = self.device.type == "cuda"
        #: fp32 math of the GPU providers: the workload's declaration (the CPU has no TF32).
        self.fp32_math = self.declared_fp32_math() if gpu else "fp32"
        available = ort.get_available_providers()
        self.tensorrt_probe: LibraryProbe | None = None
        if gpu and spec.ort_provider in ("auto", "tensorrt") and PROVIDERS["tensorrt"] in available:
            self.tensorrt_probe = probe_tensorrt_libraries()
        conflict = ""
        if spec.precision == "fp32" and self.fp32_math != tensorrt_fp32_math(os.environ):
            conflict = (
                f"builds fp32 layers in {tensorrt_fp32_math(os.environ)} (TensorRT's default; "
                f"onnxruntime has no per-session switch), the workload declares "
                f"{self.fp32_math} for onnxruntime (NVIDIA_TF32_OVERRIDE=0 turns TF32 off)"
            )
        self.plan = choose_providers(
            spec.ort_provider,
            spec.device,
            available,
            self.tensorrt_probe,
            conflict,
            cuda_graphs=spec.cuda_graphs,
        )
        self.provider = self.plan.chain[0]
        #: Where TensorRT keeps its engines: beside the exported models, one directory per
        #: onnxruntime version (onnxruntime's docs: clear engines when it or TensorRT changes;
        #: a new onnxruntime-gpu brings its own TensorRT).
        self.tensorrt_cache: Path | None = (
            cache_dir / "tensorrt" / f"onnxruntime-{ort.__version__}"
            if PROVIDERS["tensorrt"] in self.plan.chain
            else None
        )
        self.session_providers: list[str] = []
        self.provider_options_in_effect: dict[str, dict[str, str]] = {}
        #: Every option of every provider, as the session reports them (strings).
        self.session_provider_options: dict[str, dict[str, str]] = {}
        self.placement: dict[str, Any] = {}
        self.verification: dict[str, Any] = {}
        self.exported_from_cache = False

    # -- for subclasses ----------------------------------------------------------------
    def declared_fp32_math(self) -> str:
        """The workload's declared fp32 math mode for onnxruntime GPU runs, ``tf32`` or
        ``fp32`` (``INFO.fp32_math["onnxruntime"]``)."""
        raise NotImplementedError

    def source_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def export_inputs(self) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        raise NotImplementedError

    def model_variant(self) -> dict[str, Any]:
        """What besides workload and precision defines the exported model (cache key)."""
        return {"seed": self.spec.seed, "pretrained": self.spec.pretrained}

    def postprocess(self, model_path: Path) -> Path:
        """Optimize or convert the exported fp32 model (e.g. fusion, fp16). Default: none."""
        return model_path

    # -- shared ---------------------------------------------------------------------------
    def prepare_model(self) -> tuple[Path, torch.nn.Module]:
        source = self.source_model().eval()
        path = cache_path(self.cache_dir, self.spec.workload, "fp32", **self.model_variant())
        if path.exists():
            self.exported_from_cache = True
        else:
            export(
                source,
                self.export_inputs(),
                path,
                self.input_names,
                self.output_names,
                self.dynamic_axes(),
            )
        return self.postprocess(path), source

    def session(self, path: Path) -> ort.InferenceSession:
        """A session on ``self.plan``'s providers, checked to have them all and the options
        asked for. Without CUDA graphs, profiling is on for its first run (the check before
        timing, untimed): that run tells which provider ran each node, and
        ``record_placement()`` then ends profiling. With CUDA graphs that first run captures
        the graph and is not profiled: onnxruntime itself refuses the session unless the
        capturing provider has every compute node (see ``cuda_graph_provider``)."""
        opts = ort.SessionOptions()
        level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVEL)
        opts.graph_optimization_level = level
        if self.provider == PROVIDERS["cpu"]:
            opts.intra_op_num_threads = len(os.sched_getaffinity(0))
        opts.enable_profiling = not self.spec.cuda_graphs
        prefix = Path(tempfile.gettempdir()) / f"gpu-bench-ort-profile-{os.getpid()}-{id(self):x}"
        opts.profile_file_prefix = str(prefix)
        self.session_options = {
            "graph_optimization_level": GRAPH_OPTIMIZATION_LEVEL,
            "intra_op_num_threads": opts.intra_op_num_threads,
            "inter_op_num_threads": opts.inter_op_num_threads,
            "execution_mode": str(opts.execution_mode),
            "enable_profiling": opts.enable_profiling,
        }
        chain = self.plan.chain
        if self.tensorrt_cache is not None:
            self.tensorrt_cache.mkdir(parents=True, exist_ok=True)
        providers = provider_options(
            chain,
            self.device.index or 0,
            self.spec.precision,
            self.fp32_math,
            cuda_graphs=self.spec.cuda_graphs,
            tensorrt_cache=None if self.tensorrt_cache is None else str(self.tensorrt_cache),
        )
        try:
            # enable_fallback=0: no silent retry on [CUDA, CPU] or [CPU], without the provider
            # options, when a provider fails (recent onnxruntime reads it; 1.18 ignores it
            # and check_session_providers() catches the fallback's session instead)
            session = ort.InferenceSession(
                str(path), sess_options=opts, providers=providers, enable_fallback=0
            )
        except Exception as error:
            for leftover in prefix.parent.glob(f"{prefix.name}_*.json"):
                leftover.unlink(missing_ok=True)  # written by a half-made session's teardown
            if isinstance(error, RuntimeError | ValueError):  # what onnxruntime calls EP errors
                hint = ""
                if self.spec.cuda_graphs and "CUDA Graph" in str(error):
                    hint = (
                        " (a CUDA graph needs the whole model on one provider: a model "
                        "TensorRT takes only in part can run with --ort-provider cuda)"
                    )
                raise ProviderError(
                    f"onnxruntime could not create a session on {', '.join(chain)}: {error}{hint}"
                ) from error
            raise
        try:
            self.session_providers = list(session.get_providers())
            check_session_providers(chain, self.session_providers)
            in_effect = session.get_provider_options()
            self.session_provider_options = {
                name: {key: str(value) for key, value in options.items()}
                for name, options in in_effect.items()
            }
            self.provider_options_in_effect = {
                name: {key: str(in_effect.get(name, {}).get(key)) for key in options}
                for name, options in providers
                if options
            }  # "None": not reported by this onnxruntime
            check_provider_options(providers, self.provider_options_in_effect)
        except BaseException:
            end_profiling(session)  # else onnxruntime writes the profile when it is destroyed
            raise
        return session

    def record_placement(self, session: ort.InferenceSession) -> None:
        """End the session's profiling (its one profiled run done) and record which provider
        ran each node; a GPU run with heavy nodes on the CPU fails here."""
        nodes = profile_nodes(end_profiling(session))
        self.placement = {
            "method": "onnxruntime session profiling of the verification run (untimed)",
            "nodes_by_provider": nodes_by_provider(nodes),
            "ops_by_provider": ops_by_provider(nodes),
        }
        check_placement(nodes, self.spec.device)

    def start(
        self,
        source: torch.nn.Module,
        make_inputs: Callable[[int], dict[str, np.ndarray]],
        reference: Callable[[torch.nn.Module, dict[str, np.ndarray]], list[np.ndarray]],
        inputs: dict[str, torch.Tensor],
        outputs: dict[str, torch.Tensor],
    ) -> None:
        """Open the session on ``self.model_path``, bind the step's ``inputs`` and
        ``outputs`` (``self.binding``), and check the session's outputs against the source
        model's on a fresh batch (``make_inputs(seed + 1)``) before any timing.

        What onnxruntime does once lands in ``one_off_s["engine_build_s"]``: creating the
        session (graph optimization, partitioning, engines loaded from TensorRT's cache),
        its first run (TensorRT builds its engines there) and the first run at the step's
        shape (TensorRT builds again for a shape outside its engine's profile, cuDNN searches
        its convolution algorithms). With CUDA graphs those two runs are one: onnxruntime's
        first ``Run()`` makes the regular runs it needs for its allocations, captures the
        graph and replays it (``InferenceSession::Run``; CUDA EP ``OnRunEnd``; older versions
        capture on a later run: :data:`GRAPH_SETUP_RUNS`), so the capture is inside
        ``engine_build_s``, and the outputs checked are a replay's. The source model's
        reference computation is not part of it."""
        clock = time.perf_counter
        t0 = clock()
        session = self.session(self.model_path)
        build_s = clock() - t0
        check = make_inputs(self.spec.seed + 1)
        if self.spec.cuda_graphs:
            self.binding = Binding(session, self.device, inputs, outputs)
            # the graph replays on the addresses and shapes it was captured with: the check
            # runs through the step's own binding, then the step's batch is written back
            check = {name: array[: self.spec.batch] for name, array in check.items()}
            step_batch = {name: t.clone() for name, t in self.binding.inputs.items()}
            t0 = clock()
            got = self._run_bound(check, runs=GRAPH_SETUP_RUNS)
            build_s += clock() - t0
            for name, tensor in self.binding.inputs.items():
                tensor.copy_(step_batch[name])
            self.sync()
            provider = cuda_graph_provider(self.plan.chain)
            self.placement = {
                "method": (
                    f"not profiled (the first run captures the CUDA graph): onnxruntime "
                    f"created the session only with every compute node on {provider}"
                ),
                "nodes_by_provider": {},
                "ops_by_provider": {},
            }
        else:
            t0 = clock()
            try:
                got = session.run(list(self.output_names), check)
            except BaseException:
                end_profiling(session)
                raise
            build_s += clock() - t0
            self.record_placement(session)
            self.binding = Binding(session, self.device, inputs, outputs)
            t0 = clock()
            self.binding.run(inputs_written=True)  # torch's copies into the inputs first
            self.sync()
            build_s += clock() - t0
        self.one_off_s["engine_build_s"] = build_s
        with torch.no_grad():
            want = reference(source, check)
        self.check_outputs(got, want)

    def _run_bound(self, check: dict[str, np.ndarray], runs: int = 1) -> list[np.ndarray]:
        """Run ``check`` (at most the step's batch) ``runs`` times through the step's
        binding: its rows are repeated to fill the bound inputs, and the outputs of its own
        rows in the last run come back."""
        rows = len(next(iter(check.values())))
        for name, tensor in self.binding.inputs.items():
            filled = np.resize(check[name], tuple(tensor.shape))  # rows repeated in order
            tensor.copy_(torch.from_numpy(filled).to(tensor.device))
        for i in range(runs):
            self.binding.run(inputs_written=i == 0)
        return [
            self.binding.outputs[name][:rows].detach().float().cpu().numpy()
            for name in self.output_names
        ]

    def check_outputs(self, got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> None:
        """Each output against its source within the run's tolerance: records the errors in
        ``self.verification`` and raises ``VerificationError`` when one is too large."""
        report = {}
        tolerance = verification_tolerance(self.spec.precision, self.fp32_math)
        for name, g, w in zip(self.output_names, got, want, strict=True):
            if g.shape != w.shape:
                raise VerificationError(f"{name}: shape {g.shape}, source gives {w.shape}")
            report[name] = output_error(g, w, self.spec.precision, tolerance)
        self.verification = {
            "inputs": "fresh random batch (seed + 1)",
            "through": "the step's IO binding" if self.spec.cuda_graphs else "session.run",
            "fp32_math": self.fp32_math,
            "outputs": report,
        }
        for name, r in report.items():
            if not r["relative_l2_error"] <= r["tolerance"]:  # NaN fails too
                raise VerificationError(
                    f"exported model differs from its source: {name} relative error "
                    f"{r['relative_l2_error']:.3g} > {r['tolerance']:g} "
                    f"(max abs error {r['max_abs_error']:.3g})"
                )

    def sync(self) -> None:
        # ONNX Runtime's CUDA stream included: a device-wide synchronize.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run_batch(
        self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """One session run on tensors whose batch size is known only per call (queries by
        sample): a fresh IO binding on the session of ``self.binding``, so inputs and
        outputs stay on the device as in ``step()``. Returns the bound output tensors.

        Not with CUDA graphs: the session replays the graph it captured on the step's
        addresses and shapes, whatever else is bound."""
        if self.spec.cuda_graphs:
            raise RuntimeError(
                "a session that captured a CUDA graph runs only the step's own binding"
            )
        binding = Binding(self.binding.session, self.device, inputs, outputs)
        binding.run(inputs_written=True)
        return binding.outputs

    def execution_details(self) -> dict[str, Any]:
        return {
            "providers": self.session_providers,
            "provider_options": self.session_provider_options,
            "graph_optimization_level": GRAPH_OPTIMIZATION_LEVEL,
            "cuda_graph": self.spec.cuda_graphs,
            "cuda_graph_provider": (
                cuda_graph_provider(self.plan.chain) if self.spec.cuda_graphs else None
            ),
            # Binding: every input and output bound to a tensor on the run's device,
            # outputs allocated once in setup
            "io_binding": True,
            "outputs_preallocated": True,
            "tensorrt_engine_cache": self.tensorrt_cache is not None,
        }

    def step_timer(self, clock: Callable[[], float]) -> StepTimer | None:
        """The host clock where a step has finished when it returns, else None.

        ``Binding.run`` returns after onnxruntime has synchronized its CUDA stream: the CUDA
        provider's ``OnRunEnd`` synchronizes it unless a run option turns that off (none
        here), and a CUDA graph's replay synchronizes too (``CUDAGraphManager::Replay``,
        core/providers/cuda/cuda_graph.cc). Work that torch queued before the run (a timed
        copy into the inputs) is waited for in ``Binding.run``; staged inputs need none. So
        a step that is the session's run alone has finished when it returns. A step that
        queues torch work after the run (SSD's post-processing) has not, and onnxruntime
        gives no markers on torch's stream: then only the window is timed."""
        if self.device.type == "cuda" and self.step_queues_device_work:
            return None
        return HostTimer(clock)

    def details(self) -> dict[str, Any]:
        return {
            # the session's own list once it exists: what onnxruntime really registered
            "provider": (self.session_providers or [self.provider])[0],
            "providers": self.session_providers,
            "providers_requested": list(self.plan.chain),
            "providers_left_out": dict(self.plan.left_out),
            "provider_options": self.provider_options_in_effect,
            "tensorrt_libraries": self.tensorrt_probe and self.tensorrt_probe.as_dict(),
            "fp32_math": self.fp32_math,
            "tensorrt_fp32_math": (
                tensorrt_fp32_math(os.environ) if PROVIDERS["tensorrt"] in self.plan.chain else None
            ),
            "nodes_by_provider": self.placement.get("nodes_by_provider", {}),
            "placement": self.placement,
            "session_options": getattr(self, "session_options", None),
            "model_file": getattr(self, "model_path", None) and self.model_path.name,
            "exported_from_cache": self.exported_from_cache,
            "verification": self.verification,
        }


class Binding:
    """IO binding with inputs and outputs in torch tensors on the run's device, so that
    ``run()`` copies nothing between host and device. Outputs are preallocated: every
    output shape here is known from the inputs, and every output of the session must be
    bound (one left to onnxruntime would be allocated anew by each run, which a CUDA graph,
    replaying on the addresses it captured, cannot follow)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        device: torch.device,
        inputs: dict[str, torch.Tensor],
        outputs: dict[str, torch.Tensor],
    ) -> None:
        self.session = session
        self.device = device
        unbound = [o.name for o in session.get_outputs() if o.name not in outputs]
        if unbound:
            raise ValueError(f"outputs {unbound} are not bound to preallocated tensors")
        self.binding = session.io_binding()
        kind = "cuda" if device.type == "cuda" else "cpu"
        index = device.index or 0
        self.inputs = {k: v.contiguous() for k, v in inputs.items()}
        self.outputs = {k: v.contiguous() for k, v in outputs.items()}
        for bind, tensors in (
            (self.binding.bind_input, self.inputs),
            (self.binding.bind_output, self.outputs),
        ):
            for name, t in tensors.items():
                bind(name, kind, index, _NP_DTYPES[t.dtype], list(t.shape), t.data_ptr())

    def run(self, inputs_written: bool = False) -> None:
        """Run the session. ``inputs_written``: torch has just queued work that fills the
        bound inputs (a host-to-device copy, a gather). ONNX Runtime computes on its own
        CUDA stream and does not wait for it, so that work is waited for first; a step whose
        inputs were staged before timing adds no synchronize. The run itself returns after
        ONNX Runtime has synchronized its stream."""
        if inputs_written and self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(self.binding)


_NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def convert_fp16(path: Path) -> Path:
    """An fp16 copy of an fp32 model, inputs and outputs kept fp32 (GPU runs)."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    out = path.with_name(path.stem + "-fp16.onnx")
    if not out.exists():
        model = OnnxModel(onnx.load(str(path)))
        model.convert_float_to_float16(keep_io_types=True)
        save_model(model, out)
    return out


def save_model(model: Any, path: Path) -> None:
    """Save an ``onnxruntime.transformers`` OnnxModel into the cache as ``export()`` writes:
    to a temporary name first, so that an interrupted write never poisons the cache."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    model.save_model_to_file(str(tmp))
    os.replace(tmp, path)
