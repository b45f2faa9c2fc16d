"""A workload that does nothing: timing it measures the harness's own per-iteration cost."""

from __future__ import annotations

from models.base import Workload


class NullWorkload(Workload):
    step_description = "nothing: an empty function call (measures the harness overhead)"

    def setup(self) -> None:
        pass

    def step(self) -> None:
        return None

    def flops_per_sample(self) -> tuple[float | None, str]:
        return 0.0, "the null workload does no arithmetic"
