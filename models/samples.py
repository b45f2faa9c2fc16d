"""Checks that every path's ``stage_samples`` / ``infer_samples`` shares (no framework
import): inference runs only, a library staged first, indices inside it."""

from __future__ import annotations

from collections.abc import Sequence

from bench.run.workload import Workload, check_indices


def check_stage(workload: Workload, count: int) -> None:
    """Refuse a training run and a library of no samples."""
    _refuse_training(workload)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"stage at least one sample, not {count!r}")


def check_query(workload: Workload, staged: int | None, indices: Sequence[int]) -> None:
    """Refuse a training run, a query before ``stage_samples()`` (``staged`` is ``None``),
    and indices that :func:`bench.run.workload.check_indices` refuses (none, or outside
    the library)."""
    _refuse_training(workload)
    if staged is None:
        raise RuntimeError(f"{type(workload).__name__}: call stage_samples() before queries")
    check_indices(indices, staged)


def _refuse_training(workload: Workload) -> None:
    """Queries by sample are inference: a training run cannot serve them, and says so with
    the error the interface raises for a workload without queries (NotImplementedError)."""
    if workload.spec.mode != "infer":
        raise NotImplementedError(
            f"{type(workload).__name__} serves queries by sample in inference runs only; "
            f"this run's mode is {workload.spec.mode!r}"
        )
