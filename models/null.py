"""A workload that does nothing: timing it measures the harness's own per-iteration cost."""

from __future__ import annotations

from collections.abc import Sequence

from bench.run.workload import Workload, WorkloadInfo, check_indices


def _no_flops(_spec: object) -> tuple[float | None, str]:
    return 0.0, "the null workload does no arithmetic"


INFO = WorkloadInfo(
    name="null", flops=_no_flops, harness_overhead=True, served="models.null_served:SERVED"
)


class NullWorkload(Workload):
    step_description = "nothing: an empty function call (measures the harness overhead)"

    def setup(self) -> None:
        if self.spec.compile != "off" or self.spec.cuda_graphs:
            raise ValueError("the null workload has nothing to compile or capture")
        self.staged = 0

    def step(self) -> None:
        return None

    def stage_samples(self, count: int) -> None:
        self.staged = count

    def infer_samples(self, indices: Sequence[int]) -> int:
        check_indices(indices, self.staged)
        return len(indices)
