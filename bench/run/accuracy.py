"""Accuracy scenarios: ``evaluate`` measures a model's metric on a dataset's test split once
(from ``--pretrained`` weights); ``to-accuracy`` trains until the metric reaches a target,
evaluating every ``eval_every`` steps, and records the time (and so the dollars) it took.

Time to accuracy is wall time from before the first sample is read to the evaluation that
reached the target: opening the loader, compiling, warm-up and evaluations included, as
MLPerf Training counts it (see :class:`ToAccuracy`); the training time alone is kept beside
it, and the window (throughput) is the measured training steps only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.run.loop import (
    Measurement,
    PhaseMarks,
    WarmUp,
    synchronized_window,
    warm_up,
)
from bench.run.registry import run_label
from bench.run.scenarios import RunContext, Scenario
from bench.run.workload import Workload
from bench.schema.spec import RunSpec


class Evaluate(Scenario):
    """One pass over the test split: the metric, and the samples/s of the evaluation."""

    name = "evaluate"
    timing = "synchronized"

    def run(self, ctx: RunContext) -> Measurement:
        workload, clock = ctx.workload, ctx.clock
        mark = PhaseMarks(ctx.on_mark)

        workload.sync()
        mark("warmup_start")
        mark("measure_start")
        start = clock()
        result = workload.evaluate(self.spec.eval_samples)
        workload.sync()
        window = clock() - start
        mark("measure_end")
        self.result = {**result, "weights": self.spec.pretrained or "random"}
        return Measurement(
            latencies_s=[window],
            window_s=window,
            warmup_s=0.0,
            marks=mark.marks,
            samples=int(result["samples"]),
        )

    def settings(self) -> dict[str, object]:
        return {"eval_samples": self.spec.eval_samples}


class ToAccuracy(Scenario):
    """Training until the metric reaches ``target_metric`` or the spec's iterations or
    duration (of training) run out, with an evaluation every ``eval_every`` training steps.

    The clock follows MLPerf Training's rule: it starts before the first sample is read.
    The workload's set-up built the model and loaded weights without touching the dataset
    (untimed: ``setup_s`` in the record); what reads it (opening the loader, a compiling or
    inspected step on real batches: ``Workload.open_data``) runs first inside the clock,
    then the warm-up steps, then the measured steps, evaluations included. Every training
    update counts toward the steps to the target, wherever it ran; the window (throughput)
    is the measured steps only.
    """

    name = "to-accuracy"
    timing = "synchronized"

    def run(self, ctx: RunContext) -> Measurement:
        spec, workload = self.spec, ctx.workload
        mark = PhaseMarks(ctx.on_mark)
        opened: list[int] = []  # updates open_data ran (a compiling step on real batches)
        warm = warm_up(
            workload.step,
            workload.sync,
            spec.warmup,
            clock=ctx.clock,
            mark=mark,
            label=run_label(spec),
            progress=ctx.progress,
            prepare=lambda: opened.append(workload.open_data()),
        )
        # the warm-up's steps train like the rest (they update the weights), in the clock,
        # but not in the window, and no evaluation falls due before the window
        training = _Training(spec, workload, ctx.clock, warm, opened[0] + spec.warmup)
        latencies, _ = synchronized_window(
            workload.step, workload.sync, clock=ctx.clock, mark=mark, after=training.after_step
        )
        evaluations, reached = training.evaluations, training.reached
        self.result = {
            "metric": evaluations[-1]["metric"] if evaluations else None,
            "target": spec.target_metric,
            "reached": reached is not None,
            "time_to_target_s": reached["wall_s"] if reached else None,
            "train_s_to_target": reached["train_s"] if reached else None,
            "steps_to_target": reached["step"] if reached else None,
            "samples_to_target": reached["samples"] if reached else None,
            "best": max((e["value"] for e in evaluations), default=None),
            "eval_s": training.eval_s,
            # in the clock before the warm-up: the loader opened, steps on real batches
            "open_data_s": warm.prepare_s,
            "steps": training.steps,
            "evaluations": evaluations,
        }
        return Measurement(
            latencies_s=latencies, window_s=sum(latencies), warmup_s=warm.seconds, marks=mark.marks
        )

    def missed_goal(self) -> str | None:
        result = self.result
        if result is None or result["reached"]:
            return None
        best = result["best"]
        best_text = f"best {best:.4f}" if best is not None else "no evaluation"
        return (
            f"target {result['metric']} {result['target']:g} not reached: {best_text} in "
            f"{result['steps']} steps ({len(result['evaluations'])} evaluations)"
        )

    def settings(self) -> dict[str, object]:
        spec = self.spec
        return {
            "target_metric": spec.target_metric,
            "eval_every": spec.eval_every,
            "eval_samples": spec.eval_samples,
            "max_iters": spec.iters,
            "max_train_s": spec.duration_s,
        }


class _Training:
    """A to-accuracy window's account after each measured step: the updates and the
    training time so far, and an evaluation every ``eval_every`` updates (outside the
    steps' times, inside the wall clock from ``start``)."""

    def __init__(
        self,
        spec: RunSpec,
        workload: Workload,
        clock: Callable[[], float],
        warm: WarmUp,
        steps: int,
    ) -> None:
        self.spec, self.workload, self.clock = spec, workload, clock
        self.start = warm.start
        self.steps = steps
        self.train_s = warm.seconds  # the data opened and the warm-up steps
        self.eval_s = 0.0
        self.next_eval = self._next_eval()
        self.evaluations: list[dict[str, Any]] = []
        self.reached: dict[str, Any] | None = None

    def _next_eval(self) -> int:
        every = self.spec.eval_every
        return (self.steps // every + 1) * every

    def _done(self) -> bool:
        spec = self.spec
        if spec.iters is not None:
            return self.steps >= spec.iters
        return spec.duration_s is not None and self.train_s >= spec.duration_s

    def after_step(self, steps: int, step_s: float, end: float, elapsed_s: float) -> float | None:
        """Count the step, evaluate when due; None ends the window (the target reached or
        the spec's iterations or training time spent). The :data:`~bench.run.loop.AfterStep`
        of a to-accuracy window."""
        self.steps += 1
        self.train_s += step_s
        done = self._done()
        if self.steps < self.next_eval and not done:
            return end
        self.next_eval = self._next_eval()
        result = self.workload.evaluate(self.spec.eval_samples)
        now = self.clock()
        self.eval_s += now - end
        point = {
            "step": self.steps,
            "samples": self.steps * self.workload.samples_per_step,
            "train_s": self.train_s,
            "wall_s": now - self.start,
            "metric": result["metric"],
            "value": result["value"],
            "eval_samples": result["samples"],
        }
        self.evaluations.append(point)
        if result["value"] >= self.spec.target_metric:
            self.reached = point
            return None
        return None if done else now
