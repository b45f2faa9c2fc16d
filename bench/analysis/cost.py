"""Cost-performance of a run from its throughput and an hourly price.

Runs are priced when they are compared, not when they are measured: prices change, and
the same run can be priced as on-demand, spot or a local GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.run import registry
from bench.schema.record import RunRecord

PRICE_BASES = ("instance", "used")


@dataclass(frozen=True)
class CostMetrics:
    """``None`` wherever the inputs do not determine a figure."""

    price_per_hour_usd: float | None = None
    samples_per_usd: float | None = None
    usd_per_million_samples: float | None = None
    hours_per_epoch: float | None = None
    usd_per_epoch: float | None = None
    energy_per_sample_j: float | None = None
    kwh_per_million_samples: float | None = None


def cost_metrics(
    samples_per_s: float | None,
    price_per_hour_usd: float | None,
    *,
    epoch_samples: int | None = None,
    energy_per_sample_j: float | None = None,
) -> CostMetrics:
    """Samples per dollar, dollars per million samples, and dollars and hours per epoch of
    ``epoch_samples`` (give it for training runs only)."""
    kwh = energy_per_sample_j * 1e6 / 3.6e6 if energy_per_sample_j is not None else None
    base = CostMetrics(
        price_per_hour_usd=price_per_hour_usd,
        energy_per_sample_j=energy_per_sample_j,
        kwh_per_million_samples=kwh,
    )
    if not samples_per_s or samples_per_s <= 0:
        return base
    hours = epoch_samples / samples_per_s / 3600 if epoch_samples is not None else None
    if price_per_hour_usd is None:
        return dataclasses.replace(base, hours_per_epoch=hours)
    samples_per_hour = samples_per_s * 3600
    return CostMetrics(
        price_per_hour_usd=price_per_hour_usd,
        samples_per_usd=samples_per_hour / price_per_hour_usd,
        usd_per_million_samples=price_per_hour_usd * 1e6 / samples_per_hour,
        hours_per_epoch=hours,
        usd_per_epoch=hours * price_per_hour_usd if hours is not None else None,
        energy_per_sample_j=energy_per_sample_j,
        kwh_per_million_samples=kwh,
    )


def loadgen_invalid(record: RunRecord) -> bool:
    """LoadGen judged the run INVALID: its figures are not the system's, so it is never
    priced or ranked best (``include_invalid`` shows them, marked)."""
    return record.loadgen_valid is False


def run_cost(
    record: RunRecord, price_per_hour_usd: float | None, *, include_invalid: bool = False
) -> CostMetrics:
    """A run's cost metrics; per-epoch figures for training runs, from the epoch size the
    workload declares. A run LoadGen judged INVALID has none."""
    if loadgen_invalid(record) and not include_invalid:
        price_per_hour_usd = None
    epoch = None
    if record.spec.mode == "train":
        epoch = registry.workload_info(record.spec.workload).epoch_samples
    return cost_metrics(
        record.samples_per_s,
        price_per_hour_usd,
        epoch_samples=epoch,
        energy_per_sample_j=record.telemetry.energy_per_sample_j,
    )


def gpus_used(record: RunRecord) -> int:
    """GPUs a run occupied: its ranks on a GPU (one without ``gpus``), none on the CPU."""
    return record.spec.ranks if record.spec.device.startswith("cuda") else 0
