"""The timed loop: warm-up, then a measured window of synchronized iterations."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from tqdm import tqdm

#: A progress bar appears only once a phase has lasted this long, so short runs stay quiet.
PROGRESS_DELAY_S = 2.0


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

    @property
    def iterations(self) -> int:
        return len(self.latencies_s)


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
) -> Measurement:
    """Run ``step`` ``warmup`` times, then measure ``iters`` steps or ``duration_s`` seconds.

    Each iteration ends with ``sync()`` before the clock is read, so asynchronous device
    work is inside the iteration that queued it. Consecutive iterations share their
    boundary timestamp: the latencies add up exactly to the measured window, and the
    little time the loop itself takes between steps is charged to the run, not hidden.
    ``on_mark(phase, unix_time)`` is called at each phase boundary, after a device sync
    and outside the timed window (telemetry reads the energy counter there).
    """
    if (iters is None) == (duration_s is None):
        raise ValueError("give exactly one of iters and duration_s")
    stream = stream or sys.stderr
    marks: dict[str, float] = {}

    def mark(phase: str) -> None:
        marks[phase] = time.time()
        if on_mark is not None:
            on_mark(phase, marks[phase])

    sync()
    mark("warmup_start")
    t_warm = clock()
    bar = _bar(progress, warmup, f"{label} warm-up", "it", stream)
    for _ in range(warmup):
        step()
        sync()
        bar.update(1)
    bar.close()
    warmup_s = clock() - t_warm

    total = iters if iters is not None else duration_s
    unit = "it" if iters is not None else "s"
    bar = _bar(progress, total, f"{label} measure", unit, stream)
    latencies: list[float] = []
    mark("measure_start")
    start = clock()
    t0 = start
    while True:
        step()
        sync()
        t1 = clock()
        latencies.append(t1 - t0)
        t0 = t1
        if iters is not None:
            bar.update(1)
            if len(latencies) >= iters:
                break
        elif duration_s is not None:
            bar.update(min(t1 - start, duration_s) - bar.n)
            if t1 - start >= duration_s:
                break
    mark("measure_end")
    bar.close()
    return Measurement(latencies_s=latencies, window_s=t0 - start, warmup_s=warmup_s, marks=marks)


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
