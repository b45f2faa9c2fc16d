"""The interface every workload implements, whatever its framework, and the facts each
workload declares without importing one.

The worker only calls these methods; it never imports a framework itself. A workload is
constructed from a validated, resolved :class:`bench.schema.spec.RunSpec` (``device`` is
``cpu`` or ``cuda:N``), then ``setup()`` builds the model and stages the synthetic batch on
the device, and ``step()`` runs one iteration. ``step()`` may return before the device has
finished: the scenario calls ``sync()`` before it reads the clock.

Scenarios that issue queries by sample index (a load generator) call ``stage_samples()``
once and then ``infer_samples()`` with the indices of each query batch.

The execution mode (``spec.compile``, ``spec.cuda_graphs``) is the workload's to apply in
``setup()``: it compiles or captures there, records what that cost in ``one_off_s``, and
raises (never falls back to eager) when it cannot. Pipelined timing asks ``step_timer()``
for markers on the device's queue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.run.loop import HostTimer, StepTimer
from bench.schema.spec import RunSpec

#: fp32 math modes: ``tf32`` when fp32 matrix work runs on TF32 tensor cores (Ampere and
#: newer), ``fp32`` when it runs in full fp32.
FP32_MATH_MODES = ("fp32", "tf32")


@dataclass(frozen=True)
class ShapeLabels:
    """How a workload's input size reads in each place it is shown (``{0}`` is the size)."""

    #: The spec field holding the input size (``image_size``, ``seq_len``).
    field: str
    #: In run labels and file names: ``i512``.
    tag: str
    #: In result tables: ``512px``.
    column: str
    #: In comparison headings: ``512x512``.
    title: str


@dataclass(frozen=True)
class WorkloadInfo:
    """What the harness may know about a workload without importing its framework."""

    name: str
    #: Forward FLOPs for one sample of a spec (multiply-add counted as 2), and their source;
    #: ``None`` with the reason when unknown.
    flops: Callable[[RunSpec], tuple[float | None, str]]
    shape: ShapeLabels | None = None
    #: Samples in one training epoch of the workload's reference dataset.
    epoch_samples: int | None = None
    epoch_dataset: str = ""
    #: fp32 math mode of each backend's GPU runs (``tf32`` or ``fp32``); the workload sets
    #: its framework's switches to match.
    fp32_math: Mapping[str, str] = field(default_factory=dict)
    #: Per backend, what a ``--pretrained`` directory must hold: a tuple of requirements,
    #: each a tuple of alternative file-name patterns (globs), every requirement met.
    checkpoint: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    #: A workload that does no work: its runs measure the harness's own overhead, and a
    #: report shows them in an appendix rather than among the jobs a buyer compares.
    harness_overhead: bool = False
    #: What a ``--data`` path must hold: an import string of a framework-free function
    #: ``(path, mode, scenario) -> None`` that raises ``data.selection.DataError`` saying what
    #: the path lacks for a run in that mode and scenario (its formats, split files, index),
    #: without decoding samples. None: the workload reads no dataset.
    data_check: str | None = None
    #: Whether a run on a dataset tokenizes with a WordPiece vocabulary: ``--vocab``, or
    #: ``vocab.txt`` in the ``--pretrained`` directory.
    needs_vocab: bool = False
    #: How ``bench serve`` serves the workload: an import string of its
    #: ``models.served.ServedForm`` (the tensors on the Open Inference Protocol, the sample
    #: library a client sends, the callable a server binds), in a module that imports no
    #: framework at module level. None: the workload is not served.
    served: str | None = None
    #: The datasets ``bench data download`` fetches for this workload: name -> import string
    #: of a ``data.sources.Source``, in a module that imports no numpy (the CLI loads each
    #: to write its help). Workloads that read the same dataset name the same Source.
    datasets: Mapping[str, str] = field(default_factory=dict)

    def shape_value(self, spec: RunSpec) -> int | None:
        return int(getattr(spec, self.shape.field)) if self.shape is not None else None

    def shape_text(self, spec: RunSpec, style: str) -> str:
        """The spec's input size as ``tag``, ``column`` or ``title`` text; empty without one."""
        return self.format_shape(self.shape_value(spec), style)

    def format_shape(self, value: int | None, style: str) -> str:
        if self.shape is None or value is None:
            return ""
        return str(getattr(self.shape, style)).format(value)

    def missing_checkpoint(self, backend: str, directory: Path) -> str | None:
        """What ``directory`` lacks to be a checkpoint for ``backend``, or None if nothing."""
        for alternatives in self.checkpoint.get(backend, ()):
            if not any(any(directory.glob(pattern)) for pattern in alternatives):
                return " or ".join(alternatives)
        return None

    def uses_tf32(self, spec: RunSpec) -> bool:
        """Whether the spec's fp32 matrix work runs on TF32 tensor cores (GPU fp32 runs of a
        backend declared ``tf32``)."""
        return (
            spec.precision == "fp32"
            and spec.device.startswith("cuda")
            and self.fp32_math.get(spec.backend, "fp32") == "tf32"
        )


class Workload(ABC):
    #: Human-readable description of what one timed step contains (stored in the result).
    step_description: str = ""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        #: One-off costs of set-up in seconds (``compile_s``, ``capture_s``,
        #: ``engine_build_s``), filled by ``setup()``; see ``bench.schema.record.Execution``.
        self.one_off_s: dict[str, float] = {}
        #: With ``spec.data``: host seconds each step waited for its batch, in step order.
        self.data_wait_s: list[float] = []
        #: Set-up work that reads the dataset, left for ``open_data()`` (to-accuracy runs).
        self._data_work: list[Callable[[], None]] = []

    @property
    def defers_data(self) -> bool:
        """Whether set-up leaves what reads the dataset to ``open_data()``: in a to-accuracy
        run, whose clock (MLPerf's rule) starts before the first sample is touched."""
        return self.spec.scenario == "to-accuracy"

    def when_data_opens(self, work: Callable[[], None]) -> None:
        """Run ``work``, set-up that reads the dataset (opening its loader, a compiling or
        inspected step on real batches), now, or in ``open_data()`` when ``defers_data``."""
        if self.defers_data:
            self._data_work.append(work)
        else:
            work()

    def open_data(self) -> int:
        """The set-up work ``when_data_opens`` deferred, in order; a to-accuracy run calls
        it first thing inside its clock. Returns the training steps it ran (they updated
        the weights, and count toward the steps to the target)."""
        work, self._data_work = self._data_work, []
        for item in work:
            item()
        return 0

    @abstractmethod
    def setup(self) -> None:
        """Build the model, optimizer and the batch on the device. Not timed; in a
        to-accuracy run it reads no data (see ``when_data_opens``)."""

    @abstractmethod
    def step(self) -> Any:
        """Run one iteration: a training step (forward, loss, backward, update) or an
        inference step (forward and post-processing)."""

    def sync(self) -> None:
        """Block until all work queued on the device has finished."""

    def stage_samples(self, count: int) -> None:
        """Stage a library of ``count`` seeded samples on the device, for scenarios that issue
        queries by sample index. Not timed. Inference workloads only."""
        raise NotImplementedError(f"{type(self).__name__} cannot serve queries by sample")

    def infer_samples(self, indices: Sequence[int]) -> Any:
        """Inference on the staged samples at ``indices`` as one batch (any length up to the
        library size, repeats allowed), including post-processing, like ``step()``."""
        raise NotImplementedError(f"{type(self).__name__} cannot serve queries by sample")

    @property
    def samples_per_step(self) -> int:
        return self.spec.batch

    def details(self) -> dict[str, Any]:
        """Facts about the built model worth keeping in the result (after ``setup``)."""
        return {}

    def execution_details(self) -> dict[str, Any]:
        """How the step runs beyond the spec's switches (after ``setup``): memory format,
        fused optimizer, attention kernel, graph and fusion settings."""
        return {}

    def step_timer(self, clock: Callable[[], float]) -> StepTimer | None:
        """Markers that time each step on the device in pipelined timing. The default, the
        host clock, is right for steps that have finished when they return; a workload
        whose steps run asynchronously returns device events, or None where the framework
        has none (then only the window is timed)."""
        return HostTimer(clock)

    def step_waits_for_device(self) -> str | None:
        """Why every step waits on the host for the device, where a call inside it reads a
        result back (a loss that reads a count, a loss scaler's overflow check); None where a
        step only queues work. Pipelined timing of such a step is synchronized in fact."""
        return None

    def data_facts(self) -> dict[str, Any]:
        """With ``spec.data``: ``format``, ``samples`` and anything else worth keeping about
        the dataset and its loader (after ``setup``)."""
        return {}

    def evaluate(self, max_samples: int | None = None) -> dict[str, Any]:
        """The model's accuracy on the test split of ``spec.data`` (at most ``max_samples``
        samples): ``metric`` (``voc07_map``, ``accuracy``), ``value`` in [0, 1], ``samples``
        and ``split``. A training run evaluates its current weights and goes on training."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate accuracy")

    def save_weights(self, directory: Path) -> list[str]:
        """Write the model's weights into ``directory`` (which exists) in the layout this
        backend's ``--pretrained`` reads, after training; returns the file names written."""
        raise NotImplementedError(f"{type(self).__name__} cannot save its weights for --pretrained")

    def after_window(self) -> None:
        """Measurements of the set-up workload that follow the window (a data-parallel run
        times its step without gradient synchronization here); their results go into
        ``execution_details()``."""

    def agree_to_stop(self, done: bool) -> bool:
        """Whether a duration-bound window ends now: this rank's ``done`` in one process;
        rank 0's on every rank of several (``bench.run.loop.Agree``)."""
        return done

    def barrier(self) -> None:
        """Wait for every rank of a multi-process run (no-op in one process). Called at the
        measured window's edges, so that the ranks' windows start together."""

    def profile(self, steps: int) -> list[dict[str, Any]] | None:
        """Run ``steps`` steps under the framework's profiler and return the top kernels (or
        operators on the CPU) by time: ``name``, ``total_ms``, ``calls``, ``share``. None
        where the framework has no profiler this harness reads."""
        return None

    def is_oom(self, exc: BaseException) -> bool:
        """True when ``exc`` means the device ran out of memory at this batch size."""
        return False

    def loadgen_sut(self, complete: Callable[..., None], clock: Callable[[], float]) -> Any:
        """LoadGen's system under test when the workload brings its own (an endpoint
        client); None: the harness's batching SUT over ``infer_samples``."""
        return None

    def teardown(self) -> None:
        """Release what ``setup`` took. The worker process exits right after, regardless."""


def check_indices(indices: Sequence[int], staged: int) -> None:
    """Refuse an empty query or an index outside the staged library."""
    if not indices:
        raise ValueError("a query needs at least one sample index")
    bad = [i for i in indices if not 0 <= i < staged]
    if bad:
        raise IndexError(f"sample indices {bad[:5]} outside the {staged} staged samples")
