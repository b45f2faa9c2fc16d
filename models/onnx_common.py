"""The ONNX Runtime path: export from PyTorch into a cache, verify before timing, build a
session on the best execution provider, and run it through IO binding.

Inference only. Models are exported from this project's PyTorch networks (same seeded
weights), so the exported model can be checked against its source on the same inputs.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from bench.run.envinfo import PROJECT_ROOT
from bench.run.spec import RunSpec
from bench.run.workload import Workload

OPSET = 17
DEFAULT_CACHE = PROJECT_ROOT / "results" / "cache" / "onnx"
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
#: Largest relative error ||ort - source|| / ||source|| (L2 over each output) allowed by
#: the check before timing. fp32 differences come from kernel choice and summation order
#: (typically 1e-6); fp16 storage alone costs about 1e-3.
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2}


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


def choose_provider(requested: str, device: str, available: Sequence[str]) -> str:
    """The execution provider for a run: the one asked for, or on a GPU the first of
    TensorRT, CUDA available; on the CPU the CPU provider. Refuses what cannot run."""
    if device == "cpu":
        if requested not in ("auto", "cpu"):
            raise ValueError(f"--ort-provider {requested} needs a GPU device")
        return PROVIDERS["cpu"]
    order = ["tensorrt", "cuda"] if requested == "auto" else [requested]
    if order == ["cpu"]:
        raise ValueError("--ort-provider cpu with a GPU device: use --device cpu")
    for name in order:
        if PROVIDERS[name] in available:
            return PROVIDERS[name]
    raise ValueError(
        f"this onnxruntime ({ort.__version__}) has no {' or '.join(order)} provider "
        f"(available: {', '.join(available)}); install onnxruntime-gpu for GPU runs"
    )


def output_error(got: np.ndarray, want: np.ndarray, precision: str) -> dict[str, float]:
    """Relative L2 error of one output against its source, the largest absolute error,
    and the tolerance for the precision."""
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    diff = got64 - want64
    scale = float(np.linalg.norm(want64)) or 1.0
    return {
        "relative_l2_error": float(np.linalg.norm(diff)) / scale,
        "max_abs_error": float(np.abs(diff).max()),
        "max_abs_source": float(np.abs(want64).max()),
        "tolerance": TOLERANCES[precision],
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


class OnnxWorkload(Workload):
    """Base for ONNX Runtime workloads: subclasses say how to build the source model,
    its example inputs, and what the timed step does with the outputs."""

    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    #: The timed step's binding, made by ``setup()``.
    binding: Binding

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
        self.provider = choose_provider(
            spec.ort_provider, spec.device, ort.get_available_providers()
        )
        self.verification: dict[str, Any] = {}
        self.exported_from_cache = False

    # -- for subclasses ----------------------------------------------------------------
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
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.provider == PROVIDERS["cpu"]:
            opts.intra_op_num_threads = len(os.sched_getaffinity(0))
        self.session_options = {
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "intra_op_num_threads": opts.intra_op_num_threads,
            "inter_op_num_threads": opts.inter_op_num_threads,
            "execution_mode": str(opts.execution_mode),
        }
        providers: list[Any] = [self.provider]
        if self.provider != PROVIDERS["cpu"]:
            options = {"device_id": self.device.index or 0}
            if self.provider == PROVIDERS["tensorrt"] and self.spec.precision == "fp16":
                options["trt_fp16_enable"] = True
            providers = [(self.provider, options), PROVIDERS["cpu"]]
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)

    def verify(
        self,
        session: ort.InferenceSession,
        source: torch.nn.Module,
        make_inputs: Callable[[int], dict[str, np.ndarray]],
        reference: Callable[[torch.nn.Module, dict[str, np.ndarray]], list[np.ndarray]],
    ) -> None:
        """Outputs on fresh random inputs against the source model's, before any timing."""
        inputs = make_inputs(self.spec.seed + 1)
        got = session.run(list(self.output_names), inputs)
        with torch.no_grad():
            want = reference(source, inputs)
        report = {}
        for name, g, w in zip(self.output_names, got, want, strict=True):
            if g.shape != w.shape:
                raise VerificationError(f"{name}: shape {g.shape}, source gives {w.shape}")
            report[name] = output_error(g, w, self.spec.precision)
        self.verification = {"inputs": "fresh random batch (seed + 1)", "outputs": report}
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
        outputs stay on the device as in ``step()``. Returns the bound output tensors."""
        binding = Binding(self.binding.session, self.device, inputs, outputs)
        binding.run()
        return binding.outputs

    def details(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "session_options": getattr(self, "session_options", None),
            "model_file": getattr(self, "model_path", None) and self.model_path.name,
            "exported_from_cache": self.exported_from_cache,
            "verification": self.verification,
        }


class Binding:
    """IO binding with inputs and outputs in torch tensors on the run's device, so that
    ``run()`` copies nothing between host and device. Outputs are preallocated: every
    output shape here is known from the inputs."""

    def __init__(
        self,
        session: ort.InferenceSession,
        device: torch.device,
        inputs: dict[str, torch.Tensor],
        outputs: dict[str, torch.Tensor],
    ) -> None:
        self.session = session
        self.device = device
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

    def run(self) -> None:
        if self.device.type == "cuda":
            # ONNX Runtime computes on its own CUDA stream and does not wait for the inputs:
            # let the work that torch queued to fill them (an H2D copy, a gather) finish
            # first. The run itself returns after ONNX Runtime has synchronized its stream.
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
