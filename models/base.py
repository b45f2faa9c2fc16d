"""The interface every workload implements, whatever its framework.

The runner only calls these methods; it never imports a framework itself. A workload is
constructed from a validated, resolved :class:`bench.run.spec.RunSpec` (``device`` is ``cpu``
or ``cuda:N``), then ``setup()`` builds the model and stages the synthetic batch on the
device, and ``step()`` runs one iteration. ``step()`` may return before the device has
finished: the runner calls ``sync()`` before it reads the clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from bench.run.spec import RunSpec


class Workload(ABC):
    #: Human-readable description of what one timed step contains (stored in the result).
    step_description: str = ""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec

    @abstractmethod
    def setup(self) -> None:
        """Build the model, optimizer and the batch on the device. Not timed."""

    @abstractmethod
    def step(self) -> Any:
        """Run one iteration: a training step (forward, loss, backward, update) or an
        inference step (forward and post-processing)."""

    def sync(self) -> None:
        """Block until all work queued on the device has finished."""

    @property
    def samples_per_step(self) -> int:
        return self.spec.batch

    def flops_per_sample(self) -> tuple[float | None, str]:
        """Forward FLOPs for one sample (multiply-add counted as 2) and how they were found.

        ``None`` with a reason when unknown. Training is counted as 3x forward by the runner.
        """
        return None, "not declared"

    def fp32_uses_tf32(self) -> bool:
        """Whether fp32 runs do their main matrix work on TF32 tensor cores (for MFU)."""
        return False

    def details(self) -> dict[str, Any]:
        """Facts about the built model worth keeping in the result (after ``setup``)."""
        return {}

    def is_oom(self, exc: BaseException) -> bool:
        """True when ``exc`` means the device ran out of memory at this batch size."""
        return False

    def teardown(self) -> None:
        """Release what ``setup`` took. The worker process exits right after, regardless."""

    @staticmethod
    def framework_info(device: str) -> dict[str, Any]:
        """Versions and device facts only the framework knows (CUDA runtime, cuDNN, ...)."""
        return {}
