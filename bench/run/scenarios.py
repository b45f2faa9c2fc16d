"""Scenarios: how work is issued to a workload during the measured window.

A workload says what one step (or one query of samples) does; a scenario decides when and
how often it runs and what is timed. The worker asks the spec's scenario to run the
workload and gets back a :class:`~bench.run.loop.Measurement`. ``loop`` (a warm-up, then a
fixed number of synchronized steps or a fixed duration) is the first; load-generator
scenarios that issue queries by sample index (``Workload.infer_samples``) come next.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.run import registry
from bench.run.loop import Measurement, measure, measure_pipelined
from bench.run.registry import run_label
from bench.run.workload import Workload
from bench.schema.record import RunRecord, ScenarioFacts
from bench.schema.spec import RunSpec, SpecError

Mark = Callable[[str, float], None]


@dataclass(frozen=True)
class RunContext:
    """What a scenario's ``run`` is given besides its spec: the set-up workload and the
    worker's hooks."""

    workload: Workload
    #: Progress bars (and LoadGen's expectations) on stderr.
    progress: bool = True
    #: ``on_mark(phase, unix_time)`` at each phase edge (telemetry reads its energy there).
    on_mark: Mark | None = None
    clock: Callable[[], float] = time.perf_counter
    #: Where the scenario keeps its own files (LoadGen's logs); None: nowhere.
    artifacts: Path | None = None


class Scenario(ABC):
    name: ClassVar[str]
    #: ``synchronized``: the host waits for the device after every step before the clock.
    timing: ClassVar[str]

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        #: What the scenario found beyond the timings (LoadGen's verdict, a metric), kept in
        #: the record's scenario section.
        self.result: dict[str, Any] | None = None
        #: Why the run was timed otherwise than the spec asked (see ``timing_name``).
        self.timing_reason: str | None = None

    @abstractmethod
    def run(self, ctx: RunContext) -> Measurement:
        """Issue work to ``ctx.workload``, calling ``ctx.on_mark`` at the phase edges."""

    def fill_record(self, record: RunRecord) -> None:
        """After the measurement: the scenario's own figures where a reference tool measured
        them (LoadGen's latency and throughput)."""

    def facts(self) -> ScenarioFacts:
        """What the record keeps about how work was issued."""
        return ScenarioFacts(
            name=self.name,
            timing=self.timing_name,
            timing_reason=self.timing_reason,
            settings=self.settings(),
            result=self.result,
        )

    @property
    def timing_name(self) -> str:
        return self.timing

    def missed_goal(self) -> str | None:
        """After ``run``: why the run missed the goal the user set (a target metric), or
        None; a run that missed it ends ``target_missed``, not ``ok``."""
        return None

    def settings(self) -> dict[str, object]:
        return {}


class FixedLoop(Scenario):
    """Warm-up steps, then ``iters`` steps or ``duration_s`` seconds of steps: each followed
    by a device synchronize before the clock is read (``synchronized``), or queued without
    waiting and timed on the device, with one synchronize at the end (``pipelined``). A
    pipelined run whose step waits for the device itself (``Workload.step_waits_for_device``)
    is synchronized in fact: the record says so, and why."""

    name = "loop"
    timing = "synchronized"

    @property
    def timing_name(self) -> str:
        return "synchronized" if self.timing_reason is not None else self.spec.timing

    def run(self, ctx: RunContext) -> Measurement:
        spec, workload = self.spec, ctx.workload
        if spec.timing == "pipelined":
            waits = workload.step_waits_for_device()
            if waits is not None:
                self.timing_reason = f"pipelined asked for, but every step waits: {waits}"
            return measure_pipelined(
                workload.step,
                workload.sync,
                workload.step_timer(ctx.clock),
                warmup=spec.warmup,
                iters=spec.iters,
                duration_s=spec.duration_s,
                label=run_label(spec),
                progress=ctx.progress,
                clock=ctx.clock,
                on_mark=ctx.on_mark,
                agree=workload.agree_to_stop,
            )
        return measure(
            workload.step,
            workload.sync,
            warmup=spec.warmup,
            iters=spec.iters,
            duration_s=spec.duration_s,
            label=run_label(spec),
            progress=ctx.progress,
            clock=ctx.clock,
            on_mark=ctx.on_mark,
            agree=workload.agree_to_stop,
        )

    def settings(self) -> dict[str, object]:
        spec = self.spec
        return {"warmup": spec.warmup, "iters": spec.iters, "duration_s": spec.duration_s}


def scenario_for(spec: RunSpec) -> Scenario:
    """The spec's scenario, ready to run its workload."""
    target = registry.SCENARIOS.get(spec.scenario)
    if target is None:
        raise SpecError(
            f"unknown scenario {spec.scenario!r}: choose from {', '.join(registry.SCENARIOS)}"
        )
    cls = registry.load(target)
    if not (isinstance(cls, type) and issubclass(cls, Scenario)):
        raise TypeError(f"{target} is not a Scenario")
    return cls(spec)
