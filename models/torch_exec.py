"""How a PyTorch step runs beyond eager: ``torch.compile`` with no silent fallback, whole-step
CUDA graph capture, CUDA event step timers, the profiler's top entries and the SDPA kernel
that ran.

The pure functions here (:func:`describe_compile_error`, :func:`top_entries`,
:func:`profile_rows`, :func:`sdpa_kernel`) hold the decisions; the rest wraps torch calls.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import torch
from torch import nn
from torch.profiler import DeviceType

T = TypeVar("T")

#: Inductor, the backend every compile mode uses.
COMPILE_BACKEND = "inductor"
#: Steps run on a side stream before a CUDA graph capture (the PyTorch CUDA graphs notes'
#: whole-network example): cuDNN autotuning, cuBLAS workspaces, lazily created optimizer
#: state and the compiled code's first calls happen there, not in the capture.
GRAPH_WARMUP_STEPS = 3
#: Entries a profile keeps.
PROFILE_TOP = 15
#: Longest name a profile entry keeps (templated kernel names run to thousands of characters).
PROFILE_NAME_LIMIT = 240
#: The first words of every compile failure's message (the worker reports it as the error).
COMPILE_FAILED = "compile failed"

#: SDPA backend operators as the profiler names them, in the order :func:`sdpa_kernel`
#: prefers them when a step ran more than one, and the kernel each stands for.
SDPA_OPERATORS: tuple[tuple[str, str], ...] = (
    ("aten::_scaled_dot_product_flash_attention", "flash"),
    ("aten::_scaled_dot_product_efficient_attention", "efficient"),
    ("aten::_scaled_dot_product_cudnn_attention", "cudnn"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "flash_cpu"),
    ("aten::_scaled_dot_product_fused_attention_overrideable", "overrideable"),
    ("aten::_scaled_dot_product_attention_math", "math"),
    ("aten::_scaled_dot_product_attention_math_for_mps", "math"),
)
#: The dispatching operator: it always calls one of the above (the math path included).
SDPA_DISPATCH = "aten::scaled_dot_product_attention"


class CompileError(RuntimeError):
    """``torch.compile`` could not compile the step; the run is an error, never eager."""


def compile_module(module: nn.Module, mode: str) -> Callable[..., Any]:
    """``module`` compiled with inductor in ``mode`` (``default`` or one of torch's mode names)
    and ``fullgraph=True``: a graph break raises instead of running that part eagerly.

    Dynamo's ``suppress_errors`` is turned off for the process so that no compile error is
    swallowed into an eager fallback. Shapes are static: one input shape per run.
    """
    torch._dynamo.config.suppress_errors = False
    return torch.compile(
        module,
        mode=None if mode == "default" else mode,
        fullgraph=True,
        dynamic=False,
        backend=COMPILE_BACKEND,
    )


def describe_compile_error(mode: str, exc: BaseException) -> str:
    """``compile failed (mode M): why: what`` for an exception of a first compiled call: the
    kind of failure, the first line of dynamo's message, its explanation and the user code
    line it points at (dynamo's full text, with hints and links, is left to the chained
    exception)."""
    from torch._dynamo import exc as dynamo_exc

    if isinstance(exc, dynamo_exc.Unsupported):
        why = "graph break under fullgraph=True"
    elif isinstance(exc, dynamo_exc.BackendCompilerFailed):
        why = f"{COMPILE_BACKEND} failed"
    elif isinstance(exc, dynamo_exc.FailOnRecompileLimitHit):
        why = "recompile limit hit"
    elif isinstance(exc, dynamo_exc.TorchDynamoException):
        why = f"dynamo failed ({type(exc).__name__})"
    else:
        why = type(exc).__name__
    message = str(exc)
    inner = getattr(exc, "inner_exception", None)
    if isinstance(exc, dynamo_exc.BackendCompilerFailed) and inner is not None:
        message = f"{type(inner).__name__}: {inner}"  # not "backend='inductor' raised:"
    lines = [line.strip() for line in message.splitlines()]
    parts = [next((line for line in lines if line), "no message")]
    explanation = next((line for line in lines if line.startswith("Explanation:")), None)
    if explanation:
        parts.append(explanation.removeprefix("Explanation:").strip())
    if "from user code:" in lines:
        user = lines[lines.index("from user code:") :]
        frames = [line for line in user if line.startswith("File")]
        if frames:
            parts.append(f"at {frames[-1]}")
    text = " -- ".join(parts)
    if len(text) > 600:
        text = text[:597] + "..."
    return f"{COMPILE_FAILED} (mode {mode}): {why}: {text}"


def run_first_compiled_step(
    step: Callable[[], T],
    mode: str,
    sync: Callable[[], None],
    is_oom: Callable[[BaseException], bool],
) -> tuple[T, float]:
    """Run the first step of a compiled model (which compiles it) and return its result and
    seconds, from a synchronized device to a synchronized device. Out-of-memory errors pass
    through as they are; any other error becomes a :class:`CompileError`."""
    sync()
    start = time.perf_counter()
    try:
        out = step()
        sync()
    except Exception as exc:
        if is_oom(exc):
            raise
        raise CompileError(describe_compile_error(mode, exc)) from exc
    return out, time.perf_counter() - start


def check_capturable_scaling(
    scaler: torch.amp.GradScaler | None, optimizer: torch.optim.Optimizer | None
) -> None:
    """A training step with a grad scaler can be captured only where the optimizer takes the
    scaler's inf check into its own kernel (fused SGD, Adam, AdamW): ``GradScaler.step`` then
    hands it the device tensors instead of reading them on the host to decide whether to
    step. Raises ``ValueError`` otherwise."""
    if scaler is None or optimizer is None:
        return
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        raise ValueError(
            f"fp16 training with {type(optimizer).__name__} (not fused) reads the grad "
            "scaler's inf check on the host every step: a CUDA graph cannot hold it"
        )


class CapturedStep(Generic[T]):
    """A step captured whole in one CUDA graph and replayed on the same static tensors.

    ``capture()`` follows the PyTorch CUDA graphs notes for whole-network capture: a few
    eager steps on a side stream first, then one capture on that same stream (so cuBLAS
    workspaces and cuDNN plans made for it in the warm-up are reused, not created while
    capturing). ``body`` is what the graph holds: it must read its inputs from tensors
    that stay in place and must not synchronize with the host. ``finish`` is the host-side
    rest of a step (a scheduler step, NMS); the warm-up runs it after each body, so each
    warm-up step is a whole step. Set gradients to None before the capture (the first thing
    ``body`` does in a training step): backward then allocates them from the graph's pool and
    every replay writes them anew.

    ``replay()`` returns the tensors the capture returned; the next replay overwrites them.
    """

    def __init__(
        self,
        body: Callable[[], T],
        device: torch.device,
        finish: Callable[[T], Any] | None = None,
        warmup: int = GRAPH_WARMUP_STEPS,
    ) -> None:
        self.body = body
        self.finish = finish
        self.device = device
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: T | None = None

    def capture(self) -> float:
        """Warm up, then capture; returns the capture's seconds (device synchronized)."""
        stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                out = self.body()
                if self.finish is not None:
                    self.finish(out)
        current.wait_stream(stream)
        torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            output = self.body()
        torch.cuda.synchronize(self.device)
        self.graph, self.output = graph, output
        return time.perf_counter() - start

    def replay(self) -> T:
        if self.graph is None or self.output is None:
            raise RuntimeError("capture() first")
        self.graph.replay()
        return self.output


class CudaEventTimer:
    """Step markers on a CUDA device's current stream: events read after one synchronize."""

    kind = "cuda_events"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def elapsed_s(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return float(start.elapsed_time(end)) / 1000.0


def profile_rows(averages: Iterable[Any], device_time: bool) -> list[tuple[str, float, int]]:
    """``(name, self time in microseconds, calls)`` of the profiler's ``key_averages()``.

    ``device_time``: the device's own entries (kernels, copies, fills) with their device
    time, which CPU operators would count again. Otherwise CPU operators with their self CPU
    time (a parent's self time leaves out its children's, so nothing is counted twice).
    Annotations (``record_function`` ranges, compiled-region markers) are left out either
    way: they span entries that are already counted.
    """
    rows = []
    for entry in averages:
        if getattr(entry, "is_user_annotation", False):
            continue
        if device_time:
            if entry.device_type == DeviceType.CPU:
                continue
            rows.append((entry.key, float(entry.self_device_time_total), int(entry.count)))
        elif entry.device_type == DeviceType.CPU:
            rows.append((entry.key, float(entry.self_cpu_time_total), int(entry.count)))
    return rows


def top_entries(
    rows: Iterable[tuple[str, float, int]], top: int = PROFILE_TOP
) -> list[dict[str, Any]]:
    """The ``top`` rows by time (``(name, microseconds, calls)``), largest first, ties by name,
    as ``name``, ``total_ms``, ``calls`` and ``share`` (of the summed time of every row given,
    not only of those kept). Rows without time are dropped."""
    timed = [(name, us, calls) for name, us, calls in rows if us > 0]
    total = sum(us for _, us, _ in timed)
    ranked = sorted(timed, key=lambda row: (-row[1], row[0]))[:top]
    return [
        {
            "name": _short(name),
            "total_ms": us / 1000.0,
            "calls": calls,
            "share": us / total,
        }
        for name, us, calls in ranked
    ]


def _short(name: str) -> str:
    if len(name) <= PROFILE_NAME_LIMIT:
        return name
    return name[: PROFILE_NAME_LIMIT - 3] + "..."


def profile_steps(
    step: Callable[[], Any], steps: int, device: torch.device, sync: Callable[[], None]
) -> list[dict[str, Any]]:
    """Run ``steps`` steps under ``torch.profiler`` and return :func:`top_entries`: kernels by
    device time on a GPU, operators by self CPU time on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    sync()
    with quiet_native_stderr(), profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    return top_entries(profile_rows(prof.key_averages(), device_time=on_gpu))


def operator_names(step: Callable[[], Any], sync: Callable[[], None]) -> set[str]:
    """Names of the operators one call of ``step`` dispatched (the profiler's CPU side)."""
    from torch.profiler import ProfilerActivity, profile

    sync()
    with quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        sync()
    return {entry.key for entry in prof.key_averages()}


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """The profiler's native library logs its start and stop (and, on a CUDA build without
    a GPU, a failed device count) straight to file descriptor 2: hold it on /dev/null for
    the profiled steps. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def sdpa_kernel(op_names: Iterable[str]) -> str | None:
    """The SDPA kernel that ``op_names`` (operators a step ran) show: ``flash``,
    ``efficient``, ``cudnn``, ``flash_cpu``, ``overrideable`` or ``math`` (also when only the
    dispatching operator shows); None when no SDPA operator ran. With several backends in
    one step, the first in :data:`SDPA_OPERATORS` order."""
    names = set(op_names)
    for op, kernel in SDPA_OPERATORS:
        if op in names:
            return kernel
    return "math" if SDPA_DISPATCH in names else None
