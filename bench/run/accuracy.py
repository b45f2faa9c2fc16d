"""Accuracy scenarios: ``evaluate`` measures a model's metric on a dataset's test split once
(from ``--pretrained`` weights); ``to-accuracy`` trains until the metric reaches a target,
evaluating every ``eval_every`` steps, and records the time (and so the dollars) it took.

Time to accuracy is wall time from the first training step to the evaluation that reached
the target, evaluations included, as MLPerf Training counts it; the training time alone is
kept beside it, and the window (throughput) is training steps only.
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
        self.result = dict(result)
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
    """Warm-up steps, then training steps with an evaluation every ``eval_every`` steps until
    the metric reaches ``target_metric`` or the spec's iterations or duration (of training)
    run out."""

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

        workload.sync()
        mark("warmup_start")
        t_warm = clock()
        for _ in range(spec.warmup):
            workload.step()
            workload.sync()
        warmup_s = clock() - t_warm
        mark("measure_start")
        start = clock()
        latencies: list[float] = []
        evaluations: list[dict[str, Any]] = []
        train_s = eval_s = 0.0
        reached: dict[str, Any] | None = None
        t0 = start
        while True:
            workload.step()
            workload.sync()
            t1 = clock()
            latencies.append(t1 - t0)
            train_s += t1 - t0
            steps = len(latencies)
            if steps % spec.eval_every == 0 or self._done(steps, train_s):
                result = workload.evaluate(spec.eval_samples)
                t2 = clock()
                eval_s += t2 - t1
                point = {
                    "step": steps,
                    "samples": steps * workload.samples_per_step,
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
            if self._done(steps, train_s):
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
            "evaluations": evaluations,
        }
        return Measurement(latencies_s=latencies, window_s=train_s, warmup_s=warmup_s, marks=marks)

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


ACCURACY_SCENARIOS: dict[str, type[Scenario]] = {
    Evaluate.name: Evaluate,
    ToAccuracy.name: ToAccuracy,
}
