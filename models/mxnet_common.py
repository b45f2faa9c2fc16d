"""What every MXNet/Gluon workload shares: context, AMP, synchronization, OOM detection.

This module only imports in the MXNet environment (``.venv-mxnet``): MXNet 1.9 needs
numpy < 1.24, and gluoncv refuses to import beside torch >= 2.0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# MXNet's CPU operators use one OpenMP thread per *physical* core by default, which on a
# machine with hyper-threads (or a 2-vCPU VM) is half of what PyTorch and ONNX Runtime
# use. Give every framework the same cores; an explicit OMP_NUM_THREADS still wins.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import mxnet as mx  # noqa: E402 - must come after OMP_NUM_THREADS is set

from bench.run.spec import RunSpec
from bench.run.workload import Workload

#: The newest CUDA build of MXNet 1.9.1 on PyPI (its GPU limit is in bench/registry.py).
NEWEST_MXNET_CUDA = "cu117"


class MxnetWorkload(Workload):
    """Base for the MXNet path."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
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

    def sync(self) -> None:
        mx.nd.waitall()

    def is_oom(self, exc: BaseException) -> bool:
        text = str(exc)
        return isinstance(exc, mx.base.MXNetError) and (
            "out of memory" in text.lower() or "cudaMalloc" in text
        )

    def to_device(self, array: Any) -> mx.nd.NDArray:
        return mx.nd.array(array, ctx=self.ctx, dtype=array.dtype)

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
