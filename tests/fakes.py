"""Workloads for tests of the harness itself (no framework)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

from bench.run.workload import Workload, WorkloadInfo, check_indices


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
    """Counts its steps (its facts, COUNTING_INFO, declare 1 GFLOP per sample)."""

    def setup(self) -> None:
        self.steps = 0

    def step(self) -> None:
        self.steps += 1


class DyingWorkload(Workload):
    """Its process is killed in the middle of the measured window, as by the OOM killer."""

    def setup(self) -> None:
        self.calls = 0

    def step(self) -> None:
        self.calls += 1
        if self.calls == 3:
            os.kill(os.getpid(), signal.SIGKILL)


def _counting_flops(_spec: object) -> tuple[float | None, str]:
    return 1e9, "declared by the test"


#: Facts of a workload that declares 1 GFLOP per sample, so that TFLOP/s can be checked.
COUNTING_INFO = WorkloadInfo(name="null", flops=_counting_flops, epoch_samples=1000)


#: The service time of SleepWorkload: every batch takes this long, whatever its size.
SERVICE_S = 0.010


class SleepWorkload(Workload):
    """A server of known capacity: each batch of queries takes SERVICE_S (one worker), so
    with batches of one it is an M/D/1 queue under Poisson arrivals."""

    step_description = f"sleeps {SERVICE_S * 1000:g} ms per batch"

    def setup(self) -> None:
        self.staged = 0

    def step(self) -> None:
        time.sleep(SERVICE_S)

    def stage_samples(self, count: int) -> None:
        self.staged = count

    def infer_samples(self, indices: Sequence[int]) -> int:
        check_indices(indices, self.staged)
        time.sleep(SERVICE_S)
        return len(indices)
