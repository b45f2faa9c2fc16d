"""What every MXNet/Gluon workload shares: context, AMP, synchronization, OOM detection,
the fp32 math mode, host staging for timed copies, and quieting a GluonCV build warning.

This module only imports in the MXNet environment (``.venv-mxnet``): MXNet 1.9 needs
numpy < 1.24, and gluoncv refuses to import beside torch >= 2.0.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from bench.run import registry  # framework-free: no numpy yet
from bench.run.spec import RunSpec
from bench.run.workload import Workload

# MXNet's CPU operators use one OpenMP thread per *physical* core by default, which on a
# machine with hyper-threads (or a 2-vCPU VM) is half of what PyTorch and ONNX Runtime
# use. Give every framework the same cores; an explicit OMP_NUM_THREADS still wins.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

#: Read by cuBLAS and cuDNN (CUDA 11 and later): "0" keeps fp32 GEMMs and convolutions off
#: TF32 tensor cores whatever the caller asked for; unset, the caller's choice stands. MXNet
#: 1.9.1 has no switch of its own for TF32, and asks for it: its fp32 GEMMs (FullyConnected,
#: batch_dot, linalg) set CUBLAS_TF32_TENSOR_OP_MATH when built with CUDA >= 11
#: (src/operator/linalg.h, VERSION_ADJUSTED_TF32_MATH), and its fp32 convolutions use
#: CUDNN_DEFAULT_MATH, which cuDNN 8 runs on TF32 on Ampere
#: (src/operator/nn/cudnn/cudnn_convolution-inl.h). MXNET_CUDA_ALLOW_TENSOR_CORE and
#: MXNET_CUDA_TENSOR_OP_MATH_ALLOW_CONVERSION only govern fp16 tensor-core use.
TF32_OVERRIDE = "NVIDIA_TF32_OVERRIDE"
FP32_MATH_MODES = ("fp32", "tf32")


def set_fp32_math(mode: str) -> None:
    """Make this process's fp32 GEMMs and convolutions on MXNet run in ``mode``: ``fp32``
    sets NVIDIA_TF32_OVERRIDE=0, ``tf32`` unsets it (MXNet's default). It has to happen
    before MXNet makes its cuBLAS and cuDNN handles (on its first GPU operation)."""
    if mode not in FP32_MATH_MODES:
        raise ValueError(f"fp32 math mode {mode!r}: expected one of {FP32_MATH_MODES}")
    if mode == "fp32":
        os.environ[TF32_OVERRIDE] = "0"
    else:
        os.environ.pop(TF32_OVERRIDE, None)


def declared_fp32_math(workload: str) -> str:
    """The fp32 math mode workload ``workload`` declares for MXNet's GPU runs."""
    return registry.workload_info(workload).fp32_math.get("mxnet", "fp32")


def _declared_modes() -> set[str]:
    return {declared_fp32_math(w) for (w, backend) in registry.REGISTRY if backend == "mxnet"}


# Before MXNet (and with it cuBLAS and cuDNN) loads: when every MXNet workload declares the
# same mode, set it now, as OMP_NUM_THREADS above. MxnetWorkload sets its own again.
if len(_modes := _declared_modes()) == 1:
    set_fp32_math(_modes.pop())

import mxnet as mx  # noqa: E402 - must come after OMP_NUM_THREADS and the TF32 override
import numpy as np  # noqa: E402 - after OMP_NUM_THREADS too (its BLAS reads it)

#: The fp32 math mode of the first GPU workload made in this process: cuBLAS and cuDNN
#: handles, once made, keep the mode they were made under.
_process_fp32_math: dict[str, str] = {}

#: GluonCV builds SSD's feature extractor (``gluoncv.nn.feature.FeatureExpander``) as a
#: SymbolBlock whose input symbol has no dtype, so ``Symbol.infer_type``
#: (mxnet/symbol/symbol.py), called by ``gluon.block._infer_param_types`` in
#: ``SymbolBlock.__init__``, warns once per network built. Harmless: that function then gives
#: the parameters its documented default, float32, which is what they are.
UNDECIDED_TYPE_WARNING = r"Cannot decide type for the following arguments"


@contextlib.contextmanager
def quiet_undecided_type() -> Iterator[None]:
    """Silence exactly MXNet's "Cannot decide type" UserWarning inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=UNDECIDED_TYPE_WARNING, category=UserWarning)
        yield


#: The newest CUDA build of MXNet 1.9.1 on PyPI (its GPU limit is in bench/registry.py).
NEWEST_MXNET_CUDA = "cu117"


class MxnetWorkload(Workload):
    """Base for the MXNet path."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        # First, before anything touches the GPU: the fp32 math mode the workload declares.
        self.fp32_math = "fp32" if spec.device == "cpu" else self._claim_fp32_math()
        if spec.device == "cpu":
            self.ctx = mx.cpu()
        else:
            ordinal = int(spec.device.split(":")[1])
            if mx.context.num_gpus() <= ordinal:
                raise RuntimeError(
                    f"this MXNet build sees {mx.context.num_gpus()} GPU(s); install the CUDA "
                    f"build (mxnet-{NEWEST_MXNET_CUDA}) with `make setup` on the GPU machine"
                )
            self.ctx = mx.gpu(ordinal)
        if spec.precision == "bf16":
            raise ValueError("MXNet 1.9 has no bf16 mixed precision on this path: use fp16")
        if spec.precision == "fp16":
            if self.ctx.device_type == "cpu":
                raise ValueError("fp16 needs a GPU on the MXNet path")
            from mxnet.contrib import amp

            amp.init()
            self.amp = amp
        else:
            self.amp = None
        mx.random.seed(spec.seed)

    def _claim_fp32_math(self) -> str:
        mode = declared_fp32_math(self.spec.workload)
        first = _process_fp32_math.setdefault("mode", mode)
        if first != mode:
            raise RuntimeError(
                f"this process already ran MXNet on the GPU in {first} math; {mode} "
                f"(as {self.spec.workload} declares) needs a new process"
            )
        set_fp32_math(mode)
        return mode

    def sync(self) -> None:
        mx.nd.waitall()

    def is_oom(self, exc: BaseException) -> bool:
        text = str(exc)
        return isinstance(exc, mx.base.MXNetError) and (
            "out of memory" in text.lower() or "cudaMalloc" in text
        )

    def to_device(self, array: Any) -> mx.nd.NDArray:
        return mx.nd.array(array, ctx=self.ctx, dtype=array.dtype)

    def host_context(self) -> mx.Context:
        """Where a batch waits for a timed host-to-device copy: page-locked memory for the
        run's GPU (as PyTorch's pinned tensors), the CPU itself on CPU runs."""
        if self.ctx.device_type == "gpu":
            return mx.cpu_pinned(self.ctx.device_id)
        return mx.cpu()

    def stage_on_host(
        self, array: np.ndarray | mx.nd.NDArray, dtype: str = "float32"
    ) -> mx.nd.NDArray:
        """``array`` in :meth:`host_context`, already in the ``dtype`` the model consumes
        (in setup: the timed step then only copies it, see :meth:`copy_to_device`)."""
        if isinstance(array, mx.nd.NDArray):
            return array.astype(dtype, copy=False).copyto(self.host_context())
        return mx.nd.array(array, ctx=self.host_context(), dtype=dtype)

    def copy_to_device(self, host: mx.nd.NDArray) -> mx.nd.NDArray:
        """The timed host-to-device copy of an array staged with :meth:`stage_on_host`: no
        conversion, only the copy (none on CPU runs, where it is already in place, as
        PyTorch's ``.to("cpu")``)."""
        return host.as_in_context(self.ctx)

    def index_array(self, indices: Sequence[int]) -> mx.nd.NDArray:
        """A query's sample indices as an int64 NDArray in the run's context (for ``take``)."""
        return mx.nd.array(list(indices), ctx=self.ctx, dtype="int64")


def mxnet_info(device: str) -> dict[str, Any]:
    features = mx.runtime.Features()
    info: dict[str, Any] = {
        "framework": "mxnet",
        "mxnet_version": mx.__version__,
        "mxnet_cuda": features.is_enabled("CUDA"),
        "mxnet_cudnn": features.is_enabled("CUDNN"),
        "mxnet_mkldnn": features.is_enabled("MKLDNN"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "nvidia_tf32_override": os.environ.get(TF32_OVERRIDE),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus_seen": mx.context.num_gpus() if features.is_enabled("CUDA") else 0,
    }
    try:
        import gluoncv

        info["gluoncv_version"] = gluoncv.__version__
    except Exception as exc:  # noqa: BLE001 - record why, do not fail the run
        info["gluoncv_version"] = None
        info["gluoncv_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import gluonnlp

        info["gluonnlp_version"] = gluonnlp.__version__
    except Exception as exc:  # noqa: BLE001
        info["gluonnlp_version"] = None
        info["gluonnlp_error"] = f"{type(exc).__name__}: {exc}"
    return info
