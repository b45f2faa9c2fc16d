"""What every PyTorch workload shares: device, precision, synchronization, OOM detection, and
the execution modes (compile, CUDA graphs), step timers and profiles of :mod:`models.torch_exec`.

A subclass splits its step in two: ``graph_body()``, the device work on tensors staged in
setup (what a CUDA graph holds), and ``finish_step()``, the host-side rest (a scheduler step,
NMS). It builds its model in ``setup()``, passes the module to compile through
``compile_module()`` and ends ``setup()`` with ``prepare_execution()``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from bench.run import builds
from bench.run.loop import StepTimer
from bench.schema.spec import RunSpec
from models import torch_exec, torch_syncs
from models.data_base import DataWorkload
from models.torch_ddp import Ranks

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class BuildError(RuntimeError):
    """The installed PyTorch build has no kernels for the run's GPU."""


def build_refusal(device: torch.device) -> str | None:
    """One line saying why this PyTorch build cannot run on ``device``'s GPU (its
    ``torch.cuda.get_arch_list()`` against the GPU's compute capability), or None where it
    can. Checked when a run starts, before anything is built on the GPU."""
    if torch.version.cuda is None:  # a ROCm build names its architectures otherwise
        return None
    capability = torch.cuda.get_device_capability(device)
    return builds.arch_refusal(
        f"PyTorch {torch.__version__}",
        torch.cuda.get_arch_list(),
        capability,
        torch.cuda.get_device_name(device),
        builds.torch_remedy(capability),
    )


class TorchWorkload(DataWorkload):
    """Base for the PyTorch path: sync, autocast and OOM handling in one place."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec)
        self.device = torch.device(spec.device)
        self.scaler: torch.amp.GradScaler | None = None
        if self.device.type == "cuda":
            refusal = build_refusal(self.device)
            if refusal is not None:
                raise BuildError(refusal)
            torch.cuda.set_device(self.device)
            # Convolutions see one input shape for the whole run: let cuDNN pick the fastest.
            torch.backends.cudnn.benchmark = True
        if spec.mode == "train" and spec.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
        torch.manual_seed(spec.seed)
        #: Whole steps ``setup()`` ran (the compiling step, an inspected step, the CUDA graph
        #: warm-up): a training run's timed steps start that many updates in.
        self.setup_steps = 0
        #: The captured step that ``step()`` replays (``spec.cuda_graphs``).
        self.graph: torch_exec.CapturedStep[Any] | None = None
        #: With ``spec.gpus``: this process's rank among those torchrun started, and the
        #: DistributedDataParallel wrapper of a training run's model.
        self.ranks = Ranks(self.device) if spec.gpus is not None else None
        self.ddp: DistributedDataParallel | None = None
        #: The seed of the step's synthetic batch: each rank trains on its own samples.
        self.data_seed = spec.seed + (self.ranks.rank if self.ranks is not None else 0)
        #: Host synchronizations of one step, counted after the window (``after_window``).
        self.host_syncs: dict[str, Any] = {"per_step": None, "reason": "not counted yet"}

    @property
    def rank_and_size(self) -> tuple[int, int]:
        """This process's rank and the number of ranks (0 and 1 in one process)."""
        return (self.ranks.rank, self.ranks.world_size) if self.ranks is not None else (0, 1)

    def batch_copy(self) -> str:
        pinned = " (non-blocking, from pinned memory)" if self.device.type == "cuda" else ""
        return f"to the device in the step{pinned}"

    @contextlib.contextmanager
    def eval_mode(self, module: torch.nn.Module) -> Iterator[None]:
        """``module`` in eval mode, under inference mode, its training flag restored after."""
        training = module.training
        module.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            module.train(training)

    def graph_body(self) -> Any:
        """The step's device work on the tensors staged in setup, with no host
        synchronization: all of the step that a CUDA graph can hold."""
        raise NotImplementedError

    def finish_step(self, out: Any) -> Any:
        """The host-side rest of a step after ``graph_body()`` (or its replay); returns the
        step's result."""
        return out

    def step(self) -> Any:
        out = self.graph.replay() if self.graph is not None else self.graph_body()
        return self.finish_step(out)

    def compile_module(self, module: torch.nn.Module) -> Callable[..., Any]:
        """``module`` as the step calls it: wrapped in DistributedDataParallel when training on
        several ranks, then compiled in the spec's mode (fullgraph), or as it is. Compilation
        happens on the first call, in ``prepare_execution()``."""
        if self.ranks is not None and self.spec.mode == "train":
            self.ddp = self.ranks.wrap(module)
            module = self.ddp
        if self.spec.compile == "off":
            return module
        return torch_exec.compile_module(module, self.spec.compile)

    def barrier(self) -> None:
        if self.ranks is not None:
            self.ranks.barrier()

    def agree_to_stop(self, done: bool) -> bool:
        return self.ranks.rank_0_says(done) if self.ranks is not None else done

    def after_window(self) -> None:
        """The host synchronizations of one more step (:meth:`count_host_syncs`); in
        data-parallel training, the step timed with and without gradient synchronization
        (the communication share)."""
        self.count_host_syncs()
        if self.ranks is not None and self.ddp is not None:
            self.ranks.record_parameters(self.ddp)
            self.ranks.measure_comm_share(self.ddp, self.step, self.sync)

    def count_host_syncs(self) -> None:
        """Count the host synchronizations of one more step of a loop run (every rank runs
        it) into ``host_syncs``; the other scenarios time no repeated step (None, why)."""
        reason = torch_syncs.not_counted_reason(
            self.spec.scenario, self.device.type, self.spec.compile
        )
        if reason is not None:
            self.host_syncs = {"per_step": None, "reason": reason}
            return
        syncs = torch_syncs.count_host_syncs(self.step, self.device, self.sync)
        self.host_syncs = {**syncs.facts(), "counted": "one step after the measured window"}

    def prepare_execution(self) -> None:
        """The end of ``setup()``: run the compiling step (timed into ``compile_s``), then
        ``inspect_step()``, then capture the step in a CUDA graph (``capture_s``). Raises
        when compiling or capturing fails: a run never falls back to eager. These steps
        read the step's batches: a to-accuracy run runs them in ``open_data()``, in its
        clock."""
        self.when_data_opens(self._prepare_execution)

    def open_data(self) -> int:
        before = self.setup_steps
        super().open_data()
        return self.setup_steps - before

    def _prepare_execution(self) -> None:
        spec = self.spec
        if spec.compile != "off":
            _, seconds = torch_exec.run_first_compiled_step(
                self.step, spec.compile, self.sync, self.is_oom
            )
            self.one_off_s["compile_s"] = seconds
            self.setup_steps += 1
        self.inspect_step()
        if not spec.cuda_graphs:
            return
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        torch_exec.check_capturable_scaling(self.scaler, getattr(self, "optimizer", None))
        graph = torch_exec.CapturedStep(self.graph_body, self.device, self.finish_step)
        try:
            self.one_off_s["capture_s"] = graph.capture()
        except Exception as exc:
            if self.is_oom(exc):
                raise
            raise RuntimeError(f"CUDA graph capture failed: {exc}") from exc
        self.setup_steps += graph.warmup
        self.graph = graph

    def inspect_step(self) -> None:
        """Look at one step after compiling and before any capture (BERT finds its attention
        kernel); count the steps it runs in ``setup_steps``."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = AUTOCAST_DTYPES.get(self.spec.precision)
        if dtype is None:
            return contextlib.nullcontext()
        # A CUDA graph must not keep casts cached outside its capture (PyTorch's note on
        # graphs and autocast): cast anew in every step.
        return torch.autocast(
            device_type=self.device.type, dtype=dtype, cache_enabled=not self.spec.cuda_graphs
        )

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda" and self.spec.include_h2d:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward with the fp16 grad scaler when there is one, optional clipping, update."""
        optimizer.zero_grad(set_to_none=True)
        clip = getattr(self, "grad_clip", None)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip is not None:
                self.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step_timer(self, clock: Callable[[], float]) -> StepTimer | None:
        """CUDA events on the current stream on a GPU; the host clock on the CPU (a CPU step
        has finished when it returns)."""
        if self.device.type == "cuda":
            return torch_exec.CudaEventTimer(self.device)
        return super().step_timer(clock)

    def profile(self, steps: int) -> list[dict[str, Any]] | None:
        """Top kernels by device time (GPU) or operators by self CPU time (CPU) of ``steps``
        more steps."""
        return torch_exec.profile_steps(self.step, steps, self.device, self.sync)

    def execution_details(self) -> dict[str, Any]:
        """The execution mode as it was applied, and the switches that shape the kernels;
        subclasses add memory format, optimizer and attention facts."""
        compiled = self.spec.compile != "off"
        cuda = self.device.type == "cuda"
        return {
            "compile": self.spec.compile,
            "compile_backend": torch_exec.COMPILE_BACKEND if compiled else None,
            "fullgraph": True if compiled else None,
            "cuda_graphs": self.graph is not None,
            "setup_steps": self.setup_steps,
            "autocast": self.spec.precision if self.spec.precision in AUTOCAST_DTYPES else None,
            "cudnn_benchmark": cuda and bool(torch.backends.cudnn.benchmark),
            # TF32 exists on GPUs only: on the CPU fp32 math is full fp32 whatever the switches.
            "tf32_matmul": cuda and bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": cuda and bool(torch.backends.cudnn.allow_tf32),
            "distributed": self.ranks.facts(self.ddp) if self.ranks is not None else None,
            "host_syncs": self.host_syncs,
        }

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()

    def teardown(self) -> None:
        super().teardown()
        if self.ranks is not None:
            self.ranks.close()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def index_tensor(indices: Sequence[int], device: torch.device) -> torch.Tensor:
    """A query's sample indices as an int64 tensor on ``device`` (for ``index_select``)."""
    return torch.as_tensor(list(indices), dtype=torch.int64, device=device)


def torch_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "framework": "torch",
        "torch_version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn_version": None,
        "torch_num_threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        # the build's kernel architectures (empty on a build without CUDA)
        "cuda_arch_list": torch.cuda.get_arch_list() if torch.version.cuda else [],
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        info.update(
            cudnn_version=torch.backends.cudnn.version(),
            device_name=props.name,
            device_capability=f"{props.major}.{props.minor}",
            device_memory_bytes=props.total_memory,
            device_multiprocessors=props.multi_processor_count,
            device_uuid=str(getattr(props, "uuid", "")) or None,
            device_pci_bus_id=_pci_bus_id(dev),
        )
    return info


def _pci_bus_id(dev: torch.device) -> str | None:
    props = torch.cuda.get_device_properties(dev)
    parts = [getattr(props, k, None) for k in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if any(p is None for p in parts):
        return None
    domain, bus, device = parts
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"
