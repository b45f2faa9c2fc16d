"""How runs are carried out, apart from what they measure (the spec); handed to the worker
as JSON beside the spec."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.telemetry.sampling import DEFAULT_INTERVAL_S

DEFAULT_OUT = Path("results/runs")


@dataclass(frozen=True)
class RunOptions:
    """How runs are carried out, apart from what they measure (the spec)."""

    out_dir: Path = DEFAULT_OUT
    progress: bool = True
    #: Kill a worker after this many seconds (None: no limit).
    timeout_s: float | None = None
    #: Seconds between telemetry samples; None turns sampling off.
    telemetry_interval_s: float | None = DEFAULT_INTERVAL_S
    #: EC2 instance type to record instead of asking the metadata service.
    instance: str | None = None
    #: Steps run under the framework's profiler after the window (0: none).
    profile_steps: int = 0
    #: After a training run, save the weights as ``<run_id>.weights/`` in ``out_dir``, in
    #: the layout ``--pretrained`` reads.
    save_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As JSON for a worker, which runs in the project's root: ``out_dir`` absolute."""
        return {**dataclasses.asdict(self), "out_dir": str(self.out_dir.resolve())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        return cls(**{**data, "out_dir": Path(data["out_dir"])})
