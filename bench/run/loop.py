"""The timed loop: warm-up, then a measured window of synchronized or pipelined iterations."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, TextIO

from tqdm import tqdm

#: A progress bar appears only once a phase has lasted this long, so short runs stay quiet.
PROGRESS_DELAY_S = 2.0

#: Several ranks measuring a duration: takes whether this rank's clock says the window is
#: over and returns rank 0's answer, the same on every rank, so that every rank stops after
#: the same step and issues the same collectives (each rank reading its own clock could stop
#: one step apart: one rank's extra all-reduce then meets another's end barrier).
Agree = Callable[[bool], bool]


@dataclass
class Measurement:
    """Raw timings of one run. ``marks`` holds wall-clock (``time.time``) phase boundaries
    so that telemetry sampled in parallel can be cut to the measured window."""

    latencies_s: list[float]
    window_s: float
    warmup_s: float
    marks: dict[str, float] = field(default_factory=dict)
    #: Samples processed in the window when each latency is not one step of
    #: ``samples_per_step`` samples (a LoadGen query's latency is one sample's).
    samples: int | None = None
    #: The first warm-up step alone (compilation, autotuning and lazy allocation land there).
    first_step_s: float | None = None
    #: Pipelined timing: how each step's time was measured (``StepTimer.kind``).
    step_timer: str | None = None
    #: Steps issued in the window; ``latencies_s`` holds one per step when they were timed.
    steps: int | None = None

    @property
    def iterations(self) -> int:
        return self.steps if self.steps is not None else len(self.latencies_s)


class PhaseMarks:
    """Wall-clock (``time.time``) phase boundaries of a run, each passed on to ``on_mark``
    (telemetry reads its energy counter there)."""

    def __init__(self, on_mark: Callable[[str, float], None] | None = None) -> None:
        self.marks: dict[str, float] = {}
        self.on_mark = on_mark

    def __call__(self, phase: str) -> None:
        self.marks[phase] = time.time()
        if self.on_mark is not None:
            self.on_mark(phase, self.marks[phase])


class StepTimer(Protocol):
    """Markers put on the device's queue between steps and read after one synchronize (CUDA
    events), or host clock readings where a step has finished when it returns."""

    kind: str

    def mark(self) -> Any:
        """Record a marker after the work queued so far; returns it."""
        ...

    def elapsed_s(self, start: Any, end: Any) -> float:
        """Device time between two markers (after the device has passed both)."""
        ...


class HostTimer:
    """A step that has finished when it returns (a CPU step): the host clock times it."""

    kind = "host_clock"

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock

    def mark(self) -> float:
        return self.clock()

    def elapsed_s(self, start: float, end: float) -> float:
        return end - start


def measure(
    step: Callable[[], Any],
    sync: Callable[[], None],
    *,
    warmup: int,
    iters: int | None,
    duration_s: float | None,
    label: str = "",
    progress: bool = True,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.perf_counter,
    on_mark: Callable[[str, float], None] | None = None,
    agree: Agree | None = None,
) -> Measurement:
    """Run ``step`` ``warmup`` times, then measure ``iters`` steps or ``duration_s`` seconds.

    Each iteration ends with ``sync()`` before the clock is read, so asynchronous device
    work is inside the iteration that queued it (:func:`synchronized_window`).
    ``on_mark(phase, unix_time)`` is called at each phase boundary, after a device sync
    and outside the timed window (telemetry reads the energy counter there). With
    ``duration_s``, ``agree`` (several ranks) turns this rank's reading of the clock into
    the decision every rank takes (see :data:`Agree`).
    """
    if (iters is None) == (duration_s is None):
        raise ValueError("give exactly one of iters and duration_s")
    stream = stream or sys.stderr
    mark = PhaseMarks(on_mark)
    warm = warm_up(
        step, sync, warmup, clock=clock, mark=mark, label=label, progress=progress, stream=stream
    )
    window = _Window(iters, duration_s, _bar_for(progress, iters, duration_s, label, stream), agree)
    latencies, window_s = synchronized_window(
        step,
        sync,
        clock=clock,
        mark=mark,
        after=window.resume_at,
    )
    window.bar.close()
    return Measurement(
        latencies_s=latencies,
        window_s=window_s,
        warmup_s=warm.seconds,
        marks=mark.marks,
        first_step_s=warm.first_step_s,
    )


def measure_pipelined(
    step: Callable[[], Any],
    sync: Callable[[], None],
    timer: StepTimer | None,
    *,
    warmup: int,
    iters: int | None,
    duration_s: float | None,
    label: str = "",
    progress: bool = True,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.perf_counter,
    on_mark: Callable[[str, float], None] | None = None,
    agree: Agree | None = None,
) -> Measurement:
    """Warm-up as :func:`measure`, then a window of steps queued without waiting for the
    device: ``timer`` marks the queue between steps, and one ``sync()`` ends the window.

    Throughput comes from the window (the clock read after that one synchronize), each
    step's time from the timer's markers (device time: it leaves out the host's launch work
    that overlapped the previous step). Without a timer (a framework with no device events)
    only the window is measured. A marker completes when the device reaches it, so a step's
    time includes any wait for the host to queue it: a host-bound step shows as the host's
    launch time (GPU utilization says which). With ``duration_s`` the host stops queuing once it has
    spent that long (by rank 0's clock with ``agree``, as in :func:`measure`); the window then
    runs until the device has finished what was queued.
    """
    if (iters is None) == (duration_s is None):
        raise ValueError("give exactly one of iters and duration_s")
    stream = stream or sys.stderr
    mark = PhaseMarks(on_mark)
    warm = warm_up(
        step, sync, warmup, clock=clock, mark=mark, label=label, progress=progress, stream=stream
    )
    bar = _bar_for(progress, iters, duration_s, label, stream)
    window = _Window(iters, duration_s, bar, agree)
    markers: list[Any] = []
    steps = 0
    mark("measure_start")
    start = clock()
    if timer is not None:
        markers.append(timer.mark())
    while True:
        step()
        steps += 1
        if timer is not None:
            markers.append(timer.mark())
        # the host's clock only matters for a duration: no read per step otherwise
        if window.done(steps, clock() - start if duration_s is not None else 0.0):
            break
    sync()
    end = clock()
    mark("measure_end")
    window.bar.close()
    latencies = (
        [timer.elapsed_s(a, b) for a, b in zip(markers, markers[1:], strict=False)]
        if timer is not None
        else []
    )
    return Measurement(
        latencies_s=latencies,
        window_s=end - start,
        warmup_s=warm.seconds,
        marks=mark.marks,
        first_step_s=warm.first_step_s,
        step_timer=timer.kind if timer is not None else None,
        steps=steps,
    )


class _Window:
    """The measured window's bound, ``iters`` steps or ``duration_s`` seconds, and its bar."""

    def __init__(
        self,
        iters: int | None,
        duration_s: float | None,
        bar: tqdm[NoReturn],
        agree: Agree | None = None,
    ) -> None:
        self.iters, self.duration_s, self.bar, self.agree = iters, duration_s, bar, agree

    def done(self, steps: int, elapsed_s: float) -> bool:
        """Whether the window ends after ``steps`` steps in ``elapsed_s`` seconds (a step
        count is the same on every rank; a duration is rank 0's, through ``agree``)."""
        if self.iters is not None:
            self.bar.update(1)
            return steps >= self.iters
        bound = self.duration_s or 0.0
        self.bar.update(min(elapsed_s, bound) - self.bar.n)
        over = elapsed_s >= bound
        return self.agree(over) if self.agree is not None else over

    def resume_at(self, steps: int, step_s: float, now: float, elapsed_s: float) -> float | None:
        """:data:`AfterStep` of a plain window: None when it is done, else ``now``."""
        return None if self.done(steps, elapsed_s) else now


def _bar_for(
    progress: bool, iters: int | None, duration_s: float | None, label: str, stream: TextIO
) -> tqdm[NoReturn]:
    if iters is not None:
        return _bar(progress, iters, f"{label} measure", "it", stream)
    return _bar(progress, duration_s, f"{label} measure", "s", stream)


@dataclass(frozen=True)
class WarmUp:
    """What :func:`warm_up` measured, by the clock."""

    #: The clock when the warm-up began (after the ``warmup_start`` mark).
    start: float
    #: From ``start`` to the end of the last warm-up step (``prepare`` included).
    seconds: float
    #: The first warm-up step alone (not timed after a ``prepare``).
    first_step_s: float | None = None
    #: ``prepare`` alone.
    prepare_s: float | None = None


def warm_up(
    step: Callable[[], Any],
    sync: Callable[[], None],
    warmup: int,
    *,
    clock: Callable[[], float],
    mark: Callable[[str], None],
    label: str = "",
    progress: bool = True,
    stream: TextIO | None = None,
    prepare: Callable[[], Any] | None = None,
) -> WarmUp:
    """Synchronized warm-up steps after the ``warmup_start`` mark. ``prepare`` runs first,
    inside the warm-up's clock (a to-accuracy run opening its data): it replaces the timing
    of the first step alone, whose one-off costs it then holds."""
    sync()
    mark("warmup_start")
    start = t0 = clock()
    prepare_s = first_step_s = None
    if prepare is not None:
        prepare()
        sync()
        t0 = clock()
        prepare_s = t0 - start
    bar = _bar(progress, warmup, f"{label} warm-up", "it", stream or sys.stderr)
    for i in range(warmup):
        step()
        sync()
        if i == 0 and prepare is None:
            first_step_s = clock() - t0
        bar.update(1)
    bar.close()
    # one clock read per phase edge, as before the first step was timed on its own
    seconds = first_step_s if warmup == 1 and first_step_s is not None else clock() - start
    return WarmUp(start, seconds, first_step_s, prepare_s)


#: ``after(steps, step_s, now, elapsed_s)``, called after each step of a synchronized
#: window with the steps timed so far, this step's time, the clock at its end and that less
#: the window's start: None ends the window, else the clock reading the next step is timed
#: from: ``now``, or later where untimed work (an evaluation) ran after the step. Plain
#: arguments, no record per step: the call is inside the timed loop.
AfterStep = Callable[[int, float, float, float], float | None]


def synchronized_window(
    step: Callable[[], Any],
    sync: Callable[[], None],
    *,
    clock: Callable[[], float],
    mark: Callable[[str], None],
    after: AfterStep,
) -> tuple[list[float], float]:
    """Steps between the ``measure_start`` and ``measure_end`` marks, each ended by
    ``sync()`` before the clock is read, until ``after`` ends the window; returns each
    step's time and the window's (its start to the last step's end).

    Consecutive steps share their boundary timestamp: the latencies add up exactly to the
    window (less what ``after`` kept out of it), and the little time the loop itself takes
    between steps is charged to the run, not hidden."""
    latencies: list[float] = []
    mark("measure_start")
    start = t0 = clock()
    while True:
        step()
        sync()
        now = clock()
        latencies.append(now - t0)
        resume = after(len(latencies), now - t0, now, now - start)
        if resume is None:
            break
        t0 = resume
    mark("measure_end")
    return latencies, now - start


def _bar(
    enabled: bool, total: float | None, desc: str, unit: str, stream: TextIO
) -> tqdm[NoReturn]:
    return tqdm(
        total=total,
        desc=desc.strip(),
        unit=unit,
        delay=PROGRESS_DELAY_S,
        disable=not enabled or not total,
        file=stream,
        leave=False,
        dynamic_ncols=True,
    )
