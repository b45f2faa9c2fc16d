"""The process environment MXNet reads when it loads: the OpenMP thread count and the fp32
math mode (NVIDIA_TF32_OVERRIDE, read by cuBLAS and cuDNN). Every MXNet module imports this
one first, before MXNet or numpy loads; it imports neither.
"""

from __future__ import annotations

import os

from bench.run import registry  # framework-free: no numpy yet

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
