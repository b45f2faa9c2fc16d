"""What the harness knows of one GPU: nvidia-smi's facts, as device discovery reads them
and every record keeps them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    pci_bus_id: str
    memory_total_mib: int | None
    driver_version: str
    compute_capability: tuple[int, int] | None
