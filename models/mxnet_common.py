"""What every MXNet/Gluon workload shares: contexts (one, or one per device with
``spec.gpus``), AMP, synchronization, OOM detection, the fp32 math mode, CUDA graphs and the
other switches of how a hybridized graph runs, host staging for timed copies, and quieting a
GluonCV build warning.

This module only imports in the MXNet environment (``.venv-mxnet``): MXNet 1.9 needs
numpy < 1.24, and gluoncv refuses to import beside torch >= 2.0. Like every MXNet module,
it imports :mod:`models.mxnet_env` first.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

# isort: off
from models.mxnet_env import (  # first: sets the environment MXNet reads when it loads
    TF32_OVERRIDE,
    declared_fp32_math,
    set_fp32_math,
)

# isort: on
import mxnet as mx
import numpy as np
from mxnet import gluon

from bench.run.loop import StepTimer
from bench.schema.spec import ALL_GPUS, RunSpec
from models.data_base import DataWorkload

#: Read by MXNet 1.9 (``dmlc::GetEnv``) when a hybridized graph with static_alloc and
#: static_shape builds its engine segments, on its first call: each segment then runs
#: conventionally once, is captured as a CUDA graph on its second run and replayed after
#: that, on the GPU (``CudaGraphsExec`` in src/executor/cuda_graphs.h, made by
#: ``CreateEngineOp`` in src/imperative/imperative_utils.h from
#: ``CachedOp::StaticInitExec``). Operators that cannot be captured (stateful ones, other
#: resources than temporary space) run between the graphs. Read then, not at import: a
#: workload sets it in its constructor, before its set-up makes the first call.
CUDA_GRAPHS = "MXNET_ENABLE_CUDA_GRAPHS"

#: The switches of how MXNet runs a hybridized graph, with MXNet 1.9's defaults where unset
#: (docs/static_site/src/pages/api/faq/env_var.md, and where each is read):
#: CUDA graphs and their log (src/executor/cuda_graphs.h); pointwise fusion of a GPU graph,
#: on by default in builds with CUDA RTC (``OptimizeGraph`` in src/imperative/cached_op.h);
#: bulk execution, segments of operators pushed to the engine as one
#: (``Imperative::PreferBulkExecTrain/Inference`` in include/mxnet/imperative.h).
EXECUTION_SWITCHES: dict[str, str] = {
    CUDA_GRAPHS: "0",
    "MXNET_CUDA_GRAPHS_VERBOSE": "0",
    "MXNET_USE_FUSION": "1",
    "MXNET_EXEC_BULK_EXEC_TRAIN": "1",
    "MXNET_EXEC_BULK_EXEC_INFERENCE": "1",
}


def set_cuda_graphs(enabled: bool) -> None:
    """Make this process's hybridized graphs run as CUDA graphs on the GPU (``1``) or not
    (unset: MXNet's default, off), whatever the environment held."""
    if enabled:
        os.environ[CUDA_GRAPHS] = "1"
    else:
        os.environ.pop(CUDA_GRAPHS, None)


def execution_switches(environ: Mapping[str, str]) -> dict[str, str]:
    """Each of :data:`EXECUTION_SWITCHES` as ``environ`` holds it, or MXNet's default marked
    ``(default)`` where it is unset."""
    return {
        name: environ.get(name, f"{default} (default)")
        for name, default in EXECUTION_SWITCHES.items()
    }


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


#: The newest CUDA build of MXNet 1.9.1 on PyPI (its GPU limit is in bench/run/registry.py).
NEWEST_MXNET_CUDA = "cu117"

#: The kvstore that sums gradients across a run's contexts, as GluonCV's and GluonNLP's
#: training scripts use by default: ``device`` reduces on the devices themselves (GPU to
#: GPU). MXNet accepts it on several CPU contexts too, where it reduces in host memory.
#: ``gluon.Trainer`` makes none for a single context.
KVSTORE = "device"


def run_contexts(spec: RunSpec) -> list[mx.Context]:
    """The contexts a run uses: its device, or with ``gpus`` N contexts in this one process,
    ``gpu(k)`` .. ``gpu(k+N-1)`` from the run's ``cuda:k`` (the runner places them from
    ``cuda:0``), or ``cpu(0)`` .. ``cpu(N-1)`` on the CPU. MXNet keeps separate arrays per
    CPU context, so several of them run the multi-device code on the host's shared cores."""
    if spec.gpus == ALL_GPUS:
        raise ValueError("gpus 'all' is resolved to a GPU count before the run starts")
    count = spec.ranks
    if spec.device == "cpu":
        return [mx.cpu(i) for i in range(count)]
    first = int(spec.device.split(":")[1])
    seen = mx.context.num_gpus()
    if seen < first + count:
        raise RuntimeError(
            f"the run needs gpu({first + count - 1}), and this MXNet build sees {seen} GPU(s); "
            f"install the CUDA build (mxnet-{NEWEST_MXNET_CUDA}) with `make setup` on the GPU "
            "machine"
        )
    return [mx.gpu(first + i) for i in range(count)]


class MxnetWorkload(DataWorkload):
    """Base for the MXNet path."""

    #: How the workloads hybridize their networks.
    HYBRIDIZE: Mapping[str, bool] = {"static_alloc": True, "static_shape": True}

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        # First, before anything touches the GPU: the fp32 math mode the workload declares.
        self.fp32_math = "fp32" if spec.device == "cpu" else self._claim_fp32_math()
        # Before set-up's first hybridized call, where MXNet reads it (a CPU run never has
        # cuda_graphs: the spec refuses it).
        set_cuda_graphs(spec.cuda_graphs)
        #: The execution switches as this run's graphs see them.
        self.switches = execution_switches(os.environ)
        #: The flags of the hybridized network, as the block holds them.
        self.hybridize_flags: dict[str, Any] = {}
        #: One context per device (one without ``gpus``); the model has a copy on each and
        #: each takes an equal share of the global batch.
        self.contexts = run_contexts(spec)
        #: The first context: where the set-up computes and where queries by sample run.
        self.ctx = self.contexts[0]
        # Where each context's share waits for a timed copy (see copy_to_device).
        self._staging = [(self.host_context(c), c) for c in self.contexts]
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

    def hybridize(self, block: Any) -> None:
        """Hybridize ``block`` with :attr:`HYBRIDIZE` and keep the flags it then holds."""
        block.hybridize(**self.HYBRIDIZE)
        self.hybridize_flags = dict(block._flags)  # Gluon 1.x keeps them as (name, value)

    def capture_cuda_graphs(self, clock: Callable[[], float] = time.perf_counter) -> None:
        """With ``cuda_graphs``, two steps at the end of set-up: MXNet runs each segment
        conventionally the first time and captures it the second (per stream and training
        flag), so that no capture lands in the timed window; their time, the first run's
        planning and allocations included, is ``one_off_s["capture_s"]``. A training step
        updates the weights, as a warm-up step does."""
        if not self.spec.cuda_graphs:
            return
        start = clock()
        for _ in range(2):
            self.step()
        self.sync()
        self.one_off_s["capture_s"] = clock() - start

    @property
    def global_batch(self) -> int:
        """Samples in one step over all contexts: ``spec.batch`` is per context."""
        return self.spec.batch * len(self.contexts)

    @property
    def samples_per_step(self) -> int:
        return self.global_batch

    def execution_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "hybridize": self.hybridize_flags,
            "cuda_graphs": self.spec.cuda_graphs,
            "switches": self.switches,
        }
        if self.spec.gpus is not None:
            details["multi_device"] = self.multi_device_details()
        return details

    def multi_device_details(self) -> dict[str, Any]:
        """How a run with ``gpus`` spreads its step: the contexts, the global batch split
        evenly across them and, in training, the kvstore asked for to reduce gradients
        (what the trainer made of it is in ``details()``, after the run)."""
        return {
            "launcher": "one process, one context per device",
            "contexts": [str(c) for c in self.contexts],
            "global_batch": self.global_batch,
            "per_context_batch": self.spec.batch,
            "kvstore": KVSTORE if self.spec.mode == "train" else None,
        }

    def one_or_all(self, per_context: Sequence[Any]) -> Any:
        """A step's result: the one context's, or the list of every context's."""
        return per_context[0] if len(per_context) == 1 else list(per_context)

    def step_timer(self, clock: Callable[[], float]) -> StepTimer | None:
        """None: MXNet's engine runs operators asynchronously (a step returns once its
        operators are queued) and MXNet has no device events to mark its queue with, so a
        pipelined run times only its window."""
        return None

    def sync(self) -> None:
        mx.nd.waitall()

    def step_waits_for_device(self) -> str | None:
        """fp16 training: AMP's dynamic loss scaler reads its overflow check on the host
        (``asnumpy`` in ``LossScaler.has_overflow``) before every update."""
        if self.spec.mode == "train" and self.amp is not None:
            return "AMP's loss scaler reads its overflow check on the host (asnumpy)"
        return None

    def is_oom(self, exc: BaseException) -> bool:
        text = str(exc)
        return isinstance(exc, mx.base.MXNetError) and (
            "out of memory" in text.lower() or "cudaMalloc" in text
        )

    def to_device(self, array: Any, ctx: mx.Context | None = None) -> mx.nd.NDArray:
        """``array`` as an NDArray of its dtype in ``ctx`` (the first context by default)."""
        return mx.nd.array(array, ctx=ctx or self.ctx, dtype=array.dtype)

    def split_uneven(self, array: mx.nd.NDArray) -> list[mx.nd.NDArray]:
        """A batch of any size (an evaluation's last, short one) as shares over the
        contexts, as GluonCV's validation splits it (``split_and_load`` with
        ``even_split=False``), over only as many contexts as it has samples."""
        count = max(1, min(len(self.contexts), int(array.shape[0])))
        return gluon.utils.split_and_load(
            array, self.contexts[:count], batch_axis=0, even_split=False
        )

    def split(self, array: np.ndarray | mx.nd.NDArray) -> list[mx.nd.NDArray]:
        """The global batch ``array`` as each context's equal share along the first axis,
        each in its context (``gluon.utils.split_and_load``, as GluonCV's scripts split a
        batch). A host array is split on the host, so no device holds the whole batch."""
        if isinstance(array, np.ndarray):
            parts = np.split(array, len(self.contexts))
            return [self.to_device(p, c) for p, c in zip(parts, self.contexts, strict=True)]
        return gluon.utils.split_and_load(array, self.contexts, batch_axis=0, even_split=True)

    def host_context(self, ctx: mx.Context | None = None) -> mx.Context:
        """Where a batch waits for a timed host-to-device copy to ``ctx`` (the first context
        by default): page-locked memory for its GPU (as PyTorch's pinned tensors), the CPU
        context itself on CPU runs."""
        ctx = ctx or self.ctx
        if ctx.device_type == "gpu":
            return mx.cpu_pinned(ctx.device_id)
        return ctx

    def stage_on_host(
        self,
        array: np.ndarray | mx.nd.NDArray,
        dtype: str = "float32",
        ctx: mx.Context | None = None,
    ) -> mx.nd.NDArray:
        """``array`` in :meth:`host_context` of ``ctx``, already in the ``dtype`` the model
        consumes (in setup: the timed step then only copies it, see :meth:`copy_to_device`)."""
        host = self.host_context(ctx)
        if isinstance(array, mx.nd.NDArray):
            return array.astype(dtype, copy=False).copyto(host)
        return mx.nd.array(array, ctx=host, dtype=dtype)

    def stage_shares_on_host(
        self, array: np.ndarray | mx.nd.NDArray, dtype: str = "float32"
    ) -> tuple[mx.nd.NDArray, ...]:
        """The global batch ``array`` split as :meth:`split` does, each context's share
        staged with :meth:`stage_on_host` for that context."""
        host = array.asnumpy() if isinstance(array, mx.nd.NDArray) else array
        parts = np.split(host, len(self.contexts))
        return tuple(
            self.stage_on_host(p, dtype, c) for p, c in zip(parts, self.contexts, strict=True)
        )

    def copy_to_device(self, host: mx.nd.NDArray) -> mx.nd.NDArray:
        """The timed host-to-device copy of an array staged with :meth:`stage_on_host`, to
        the context it was staged for: no conversion, only the copy (none on CPU runs, where
        it is already in place, as PyTorch's ``.to("cpu")``)."""
        for staged, ctx in self._staging:
            if host.context == staged:
                return host.as_in_context(ctx)
        raise ValueError(f"an array in {host.context} was staged for none of the run's contexts")

    def batch_copy(self) -> str:
        return "each context's share of the host batch copied in the step"

    def index_array(self, indices: Sequence[int]) -> mx.nd.NDArray:
        """A query's sample indices as an int64 NDArray in the run's context (for ``take``)."""
        return mx.nd.array(list(indices), ctx=self.ctx, dtype="int64")


def kvstore_details(trainer: gluon.Trainer) -> dict[str, Any]:
    """What ``trainer`` made of its kvstore, which it does at its first step: the type
    (None with one context: nothing to reduce) and whether the optimizer runs on the kvstore
    (the update computed once on the summed gradients, the weights then copied to every
    context) or on each context's copy. Empty before a step. Gluon 1.x keeps both private."""
    if not trainer._kv_initialized:
        return {}
    kvstore = trainer._kvstore
    return {
        "kvstore": kvstore.type if kvstore is not None else None,
        "update_on_kvstore": trainer._update_on_kvstore,
    }


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
