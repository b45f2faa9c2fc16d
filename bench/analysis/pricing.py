"""How runs are priced: the catalogue with the user's overrides, instance types for runs that
recorded none, a price for a local GPU, and the basis (whole instance or the share used)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.analysis import prices
from bench.analysis.cost import gpus_used
from bench.analysis.prices import InstancePrice, PriceError, lookup, price_for_run
from bench.schema.record import RunRecord


class PricingError(ValueError):
    """Bad pricing input (a price, an instance type, a file); the CLI exits 2."""


#: The default basis: a run pays for the share of the instance's GPUs it used.
DEFAULT_BASIS = "used"


def basis_text(basis: str) -> str:
    """The pricing rule in words, for every table and report."""
    if basis == "instance":
        return "every run charged the whole instance's on-demand price"
    return (
        "each GPU run charged its share of the instance's GPUs (the whole instance when it "
        "used them all), CPU runs the whole instance; on-demand prices"
    )


@dataclass(frozen=True)
class RunPrice:
    """What a run is charged per hour, and on what basis."""

    instance_type: str
    #: What the run is charged per hour under the pricing basis (None: no trusted price).
    charged_usd: float | None
    #: How: ``1/8 GPUs``, ``8/8 GPUs``, ``whole (CPU run)`` or ``whole``.
    charged_as: str


@dataclass
class Pricing:
    """Prices runs. Basis ``used`` (the default): a GPU run pays its share of the instance's
    GPUs (the whole instance when it used them all); a CPU run pays the whole instance, never
    a GPU share. Basis ``instance``: every run pays the whole instance."""

    catalogue: dict[str, InstancePrice]
    local: InstancePrice | None = None  # --price-per-hour, for runs with no instance type
    #: --instance, for runs that recorded none: hardware name (or "*") -> instance type
    instances: dict[str, str] = field(default_factory=dict)
    basis: str = DEFAULT_BASIS

    def price(self, record: RunRecord) -> tuple[RunPrice | None, str]:
        """The run's price, or None and why not."""
        recorded = record.environment.instance.instance_type
        instance_type = recorded or self.instances.get(record.device_name, self.instances.get("*"))
        entry = lookup(self.catalogue, instance_type) if instance_type else None
        if instance_type and entry is None:
            return None, f"instance type {instance_type} is not in the price catalogue"
        entry = entry or self.local
        if entry is None:
            return None, "no instance type recorded and no --price-per-hour given"
        used = gpus_used(record)
        whole = entry.price_per_hour_usd
        if self.basis == "instance":
            return RunPrice(entry.instance_type, whole, "whole"), ""
        if used == 0:
            return RunPrice(entry.instance_type, whole, "whole (CPU run)"), ""
        share = min(used, entry.gpu_count)
        charged = price_for_run(entry, share)["price_per_hour_used_usd"]
        return RunPrice(entry.instance_type, charged, f"{share}/{entry.gpu_count} GPUs"), ""


def build_pricing(
    *,
    price_files: Sequence[Path] = (),
    spot: Sequence[str] = (),
    price_per_hour: float | None = None,
    instances: Sequence[str] = (),
    basis: str = "instance",
) -> Pricing:
    """The shipped catalogue with ``price_files`` merged in, ``spot`` prices
    (``TYPE=PRICE``), a local price, and ``instances`` (``[HARDWARE=]TYPE``) for runs that
    recorded no instance type."""
    try:
        catalogue = prices.merge(prices.load_catalogue(), *price_files)
        for item in spot:
            name, sep, value = item.partition("=")
            entry = prices.lookup(catalogue, name)
            if not sep or entry is None:
                raise PricingError(f"--spot {item}: use TYPE=PRICE with a catalogue instance type")
            catalogue[entry.instance_type] = prices.with_price(
                entry, prices.positive_float("--spot price", value), "given with --spot"
            )
        local = None
        if price_per_hour is not None:
            local = prices.local_price(
                prices.positive_float("--price-per-hour", str(price_per_hour))
            )
    except (PriceError, ValueError) as exc:
        raise PricingError(str(exc)) from exc
    chosen: dict[str, str] = {}
    for item in instances:
        hardware, sep, name = item.rpartition("=")
        entry = prices.lookup(catalogue, name)
        if entry is None:
            raise PricingError(f"--instance {item}: {name} is not in the price catalogue")
        chosen[hardware if sep else "*"] = entry.instance_type
    return Pricing(catalogue, local=local, instances=chosen, basis=basis)
