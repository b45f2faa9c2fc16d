"""Accuracy scenarios: ``evaluate`` measures a model's metric on a dataset's test split once
(from ``--pretrained`` weights); ``to-accuracy`` trains until the metric reaches a target,
evaluating every ``eval_every`` steps, and records the time (and so the dollars) it took.

Time to accuracy is wall time from before the first sample is read to the evaluation that
reached the target: opening the loader, compiling, warm-up and evaluations included, as
MLPerf Training counts it (see :class:`ToAccuracy`); the training time alone is kept beside
it, and the window (throughput) is the measured training steps only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run.loop import Measurement, PhaseMarks
from bench.run.scenarios import Mark, Scenario
from bench.run.workload import Workload


class Evaluate(Scenario):
    """One pass over the test split: the metric, and the samples/s of the evaluation."""

    name = "evaluate"
    timing = "synchronized"

    def run(
        self,
        workload: Workload,
        *,
        progress: bool = True,
        on_mark: Mark | None = None,
        clock: Callable[[], float] = time.perf_counter,
        artifacts: Path | None = None,
    ) -> Measurement:
        mark = PhaseMarks(on_mark)
        marks = mark.marks

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
            marks=marks,
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

    def run(
        self,
        workload: Workload,
        *,
        progress: bool = True,
        on_mark: Mark | None = None,
        clock: Callable[[], float] = time.perf_counter,
        artifacts: Path | None = None,
    ) -> Measurement:
        spec = self.spec
        mark = PhaseMarks(on_mark)
        marks = mark.marks
        per_step = workload.samples_per_step
        latencies: list[float] = []
        evaluations: list[dict[str, Any]] = []
        reached: dict[str, Any] | None = None

        workload.sync()
        mark("warmup_start")
        start = clock()
        steps = workload.open_data()
        workload.sync()
        t0 = clock()
        open_s = train_s = t0 - start
        eval_s = 0.0
        # warm-up: training steps like the rest (they update the weights), in the clock,
        # but not in the window, and no evaluation falls due before the window
        for _ in range(spec.warmup):
            workload.step()
            workload.sync()
            steps += 1
        t1 = clock()
        train_s += t1 - t0
        warmup_s = t1 - start
        mark("measure_start")
        t0 = clock()  # the mark's own time is in the wall clock, not in training
        next_eval = (steps // spec.eval_every + 1) * spec.eval_every
        while True:
            workload.step()
            workload.sync()
            t1 = clock()
            steps += 1
            latencies.append(t1 - t0)
            train_s += t1 - t0
            done = self._done(steps, train_s)
            if steps >= next_eval or done:
                next_eval = (steps // spec.eval_every + 1) * spec.eval_every
                result = workload.evaluate(spec.eval_samples)
                t2 = clock()
                eval_s += t2 - t1
                point = {
                    "step": steps,
                    "samples": steps * per_step,
                    "train_s": train_s,
                    "wall_s": t2 - start,
                    "metric": result["metric"],
                    "value": result["value"],
                    "eval_samples": result["samples"],
                }
                evaluations.append(point)
                t1 = t2
                if result["value"] >= spec.target_metric:
                    reached = point
                    break
            t0 = t1
            if done:
                break
        mark("measure_end")
        self.result = {
            "metric": evaluations[-1]["metric"] if evaluations else None,
            "target": spec.target_metric,
            "reached": reached is not None,
            "time_to_target_s": reached["wall_s"] if reached else None,
            "train_s_to_target": reached["train_s"] if reached else None,
            "steps_to_target": reached["step"] if reached else None,
            "samples_to_target": reached["samples"] if reached else None,
            "best": max((e["value"] for e in evaluations), default=None),
            "eval_s": eval_s,
            # in the clock before the warm-up: the loader opened, steps on real batches
            "open_data_s": open_s,
            "steps": steps,
            "evaluations": evaluations,
        }
        return Measurement(
            latencies_s=latencies, window_s=sum(latencies), warmup_s=warmup_s, marks=marks
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

    def _done(self, steps: int, train_s: float) -> bool:
        spec = self.spec
        if spec.iters is not None:
            return steps >= spec.iters
        return spec.duration_s is not None and train_s >= spec.duration_s

    def settings(self) -> dict[str, object]:
        spec = self.spec
        return {
            "target_metric": spec.target_metric,
            "eval_every": spec.eval_every,
            "eval_samples": spec.eval_samples,
            "max_iters": spec.iters,
            "max_train_s": spec.duration_s,
        }
