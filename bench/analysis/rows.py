"""One run as the comparison tables see it. Its own module so that the coordinator
(compare) and the tables it delegates to (scaling, serving, decision) all import it from
below."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.analysis.pricing import RunPrice
from bench.schema.record import RunRecord
from bench.schema.spec import RunSpec


@dataclass
class Row:
    """One run as a comparison sees it: its record, price and cost-performance figures."""

    record: RunRecord
    path: Path
    instance: str | None
    hardware: str
    samples_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    util_pct: float | None
    energy_per_sample_j: float | None
    price_per_hour_usd: float | None
    price: RunPrice | None
    unpriced_reason: str | None
    usd_per_million: float | None
    samples_per_usd: float | None
    usd_per_epoch: float | None
    hours_per_epoch: float | None
    baseline: Row | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)

    @property
    def spec(self) -> RunSpec:
        return self.record.spec

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def metric(self, name: str) -> float | None:
        value = getattr(self, name)
        return float(value) if value is not None else None
