"""Workloads for tests of the harness itself (no framework)."""

from __future__ import annotations

from models.base import Workload


class FakeOom(Exception):
    pass


class OomWorkload(Workload):
    step_description = "raises an out-of-memory error on the second step"

    def setup(self) -> None:
        self.calls = 0

    def step(self) -> None:
        self.calls += 1
        if self.calls > 1:
            raise FakeOom("CUDA out of memory. Tried to allocate 2.00 GiB")

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, FakeOom)


class FailingWorkload(Workload):
    def setup(self) -> None:
        raise RuntimeError("broken model\nsecond line")

    def step(self) -> None:
        pass


class CountingWorkload(Workload):
    """Declares 1 GFLOP per sample so that TFLOP/s can be checked."""

    def setup(self) -> None:
        self.steps = 0

    def step(self) -> None:
        self.steps += 1

    def flops_per_sample(self) -> tuple[float | None, str]:
        return 1e9, "declared by the test"
