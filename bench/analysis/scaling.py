"""How throughput scales with the GPUs of an instance: runs of the same work on 1..N ranks,
with the efficiency N-rank throughput / (N x one-rank throughput) and what an epoch costs
at each size (a run on all of an instance's GPUs pays the whole instance)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.run import registry
from bench.run.distributed import scaling_efficiency

if TYPE_CHECKING:
    from bench.analysis.rows import Row

ScalingKey = tuple[Any, ...]
_KEY_FIELDS = (
    "workload",
    "mode",
    "batch",
    "backend",
    "precision",
    "compile",
    "cuda_graphs",
    "timing",
    "include_h2d",
)


@dataclass
class ScalingPoint:
    ranks: int
    row: Row
    #: Against the one-rank run of the same work; None without one.
    efficiency: float | None


def scaling_key(row: Row) -> ScalingKey:
    """The work, its input size, the GPU model and the instance type: a one-GPU run on a
    g5.xlarge is no baseline for a g5.12xlarge (other CPUs, host memory, PCIe links)."""
    spec = row.spec
    shape = registry.workload_info(spec.workload).shape_value(spec)
    instance = row.instance or row.record.environment.instance.instance_type
    return (*(getattr(spec, f) for f in _KEY_FIELDS), shape, row.hardware, instance)


def scaling_groups(rows: Sequence[Row]) -> dict[ScalingKey, list[ScalingPoint]]:
    """Runs of the same work on the same GPU model and instance type by rank count, for
    every work measured on more than one rank. The one-rank reference is the ``--gpus 1``
    run, else a one-device run without ``--gpus``."""
    by_key: dict[ScalingKey, list[Row]] = {}
    for row in rows:
        if row.samples_per_s is not None:
            by_key.setdefault(scaling_key(row), []).append(row)
    out: dict[ScalingKey, list[ScalingPoint]] = {}
    for key, members in by_key.items():
        if not any(r.spec.ranks > 1 for r in members):
            continue
        one = [r for r in members if r.spec.gpus == 1] or [
            r for r in members if r.spec.gpus is None
        ]
        base = max(one, key=lambda r: r.samples_per_s or 0.0) if one else None
        points = []
        for row in sorted(members, key=lambda r: (r.spec.ranks, r.spec.gpus is not None)):
            eff = None
            if base is not None and base.samples_per_s and row.samples_per_s is not None:
                eff = scaling_efficiency(row.samples_per_s, row.spec.ranks, base.samples_per_s)
            points.append(ScalingPoint(row.spec.ranks, row, eff))
        out[key] = points
    return out


def scaling_title(key: ScalingKey) -> str:
    workload, mode, batch, backend, precision = key[:5]
    shape, hardware, instance = key[-3:]
    where = f"{hardware} ({instance})" if instance else hardware
    shape_text = registry.workload_info(workload).format_shape(shape, "title")
    return (
        f"{workload} {mode} on {where}, {backend} {precision}, batch {batch} per GPU {shape_text}"
    ).strip()


SCALING_NOTE = (
    "efficiency = N-GPU samples/s / (N x one-GPU samples/s); a run on all of an instance's "
    "GPUs pays the whole instance."
)
SCALING_COLUMNS = ("GPUs", "samples/s", "efficiency", "instance", "charged", "$/epoch", "h/epoch")


def scaling_rows(points: Sequence[ScalingPoint]) -> list[list[str]]:
    out = []
    for p in points:
        r = p.row
        out.append(
            [
                str(p.ranks) if r.spec.gpus is not None else "1 (one process)",
                f"{r.samples_per_s:,.2f}" if r.samples_per_s is not None else "-",
                f"{p.efficiency:.0%}" if p.efficiency is not None else "-",
                r.instance or "-",
                r.price.charged_as if r.price is not None else "-",
                f"{r.usd_per_epoch:,.2f}" if r.usd_per_epoch is not None else "-",
                f"{r.hours_per_epoch:,.3f}" if r.hours_per_epoch is not None else "-",
            ]
        )
    return out
