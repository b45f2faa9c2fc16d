"""Cost-performance of a run from its throughput and an hourly price.

Runs are priced when they are compared, not when they are measured: prices change, and
the same run can be priced as on-demand, spot or a local GPU.
"""

from __future__ import annotations

from typing import Any

from models.bert.config import EPOCH_SAMPLES as BERT_EPOCH
from models.ssd.common import EPOCH_SAMPLES as SSD_EPOCH

#: Samples in one training epoch of the workshop datasets: VOC07+12 trainval for SSD,
#: the IMDB training reviews for the BERT lab.
EPOCH_SAMPLES = {"ssd": SSD_EPOCH, "bert": BERT_EPOCH}
PRICE_BASES = ("instance", "used")


def cost_metrics(
    samples_per_s: float | None,
    price_per_hour_usd: float | None,
    *,
    workload: str,
    mode: str,
    energy_per_sample_j: float | None = None,
) -> dict[str, Any]:
    """Samples per dollar, dollars per million samples, and dollars and hours per epoch.

    ``None`` for whatever the inputs do not determine (no price, no throughput, no epoch
    size for the workload). Per-epoch figures are given for training runs only.
    """
    out: dict[str, Any] = {
        "price_per_hour_usd": price_per_hour_usd,
        "samples_per_usd": None,
        "usd_per_million_samples": None,
        "hours_per_epoch": None,
        "usd_per_epoch": None,
        "energy_per_sample_j": energy_per_sample_j,
        "kwh_per_million_samples": (
            energy_per_sample_j * 1e6 / 3.6e6 if energy_per_sample_j is not None else None
        ),
    }
    if not samples_per_s or samples_per_s <= 0:
        return out
    epoch = EPOCH_SAMPLES.get(workload) if mode == "train" else None
    if epoch is not None:
        out["hours_per_epoch"] = epoch / samples_per_s / 3600
    if price_per_hour_usd is None:
        return out
    samples_per_hour = samples_per_s * 3600
    out["samples_per_usd"] = samples_per_hour / price_per_hour_usd
    out["usd_per_million_samples"] = price_per_hour_usd * 1e6 / samples_per_hour
    if out["hours_per_epoch"] is not None:
        out["usd_per_epoch"] = out["hours_per_epoch"] * price_per_hour_usd
    return out


def gpus_used(record: dict[str, Any]) -> int:
    """GPUs a run occupied: one per ``cuda:N`` device (single-device runs for now)."""
    return 1 if str(record["spec"]["device"]).startswith("cuda") else 0
