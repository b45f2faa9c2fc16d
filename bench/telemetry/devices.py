"""GPU discovery through ``nvidia-smi`` (no framework import), device resolution and
per-device precision checks."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections.abc import Collection

from bench.schema.errors import SpecError
from bench.schema.gpu import GpuInfo

_QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "memory.total",
    "driver_version",
    "compute_cap",
)


def parse_gpu_query(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=<_QUERY_FIELDS> --format=csv,noheader,nounits``."""
    gpus = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].strip():
            continue
        if len(row) != len(_QUERY_FIELDS):
            raise ValueError(f"unexpected nvidia-smi row: {row!r}")
        index, name, uuid, bus, mem, driver, cap = (c.strip() for c in row)
        gpus.append(
            GpuInfo(
                index=int(index),
                name=name,
                uuid=uuid,
                pci_bus_id=bus,
                memory_total_mib=_int_or_none(mem),
                driver_version=driver,
                compute_capability=_capability(cap),
            )
        )
    return gpus


def query_gpus(timeout_s: float = 10.0) -> list[GpuInfo]:
    """The GPUs ``nvidia-smi`` sees (all of them, whatever CUDA_VISIBLE_DEVICES says)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    cmd = [exe, f"--query-gpu={','.join(_QUERY_FIELDS)}", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_query(out.stdout)


def visible_gpus(gpus: list[GpuInfo], cuda_visible: str | None) -> list[GpuInfo]:
    """The GPUs a CUDA program sees, in its order, given CUDA_VISIBLE_DEVICES.

    Entries are indices or UUIDs (``GPU-...``, prefixes allowed); CUDA stops at the first
    entry it cannot resolve.
    """
    if cuda_visible is None:
        return list(gpus)
    seen: list[GpuInfo] = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        match = None
        if entry.isdigit():
            match = next((g for g in gpus if g.index == int(entry)), None)
        elif entry:
            match = next((g for g in gpus if g.uuid.startswith(entry)), None)
        if match is None or match in seen:
            break
        seen.append(match)
    return seen


def resolve_device(device: str, gpus: list[GpuInfo]) -> str:
    """Turn ``auto``/``cuda``/``cuda:N``/``cpu`` into ``cpu`` or ``cuda:N``, or refuse."""
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda:0" if gpus else "cpu"
    if not gpus:
        raise SpecError(f"device {device} asked for, but no NVIDIA GPU was found (nvidia-smi)")
    ordinal = 0 if device == "cuda" else int(device.split(":", 1)[1])
    if ordinal >= len(gpus):
        raise SpecError(f"device {device} asked for, but only {len(gpus)} GPU(s) are visible")
    return f"cuda:{ordinal}"


def gpu_for(device: str, gpus: list[GpuInfo]) -> GpuInfo | None:
    if not device.startswith("cuda:"):
        return None
    ordinal = int(device.split(":", 1)[1])
    return gpus[ordinal] if ordinal < len(gpus) else None


def check_precision(precision: str, device: str, gpu: GpuInfo | None) -> None:
    """Refuse precisions the hardware cannot run usefully."""
    if device == "cpu":
        if precision == "fp16":
            raise SpecError("fp16 is not supported on the CPU: use bf16 or fp32")
        return
    cap = gpu.compute_capability if gpu else None
    if precision == "bf16" and cap is not None and cap < BF16_MIN_CAPABILITY:
        name = gpu.name if gpu else device
        raise SpecError(
            f"bf16 needs compute capability 8.0 or newer; {name} has {cap[0]}.{cap[1]}: use fp16"
        )


#: Compute capability from which GPUs have bf16 tensor cores (Ampere): not V100 or T4.
BF16_MIN_CAPABILITY = (8, 0)


def resolve_precision(
    precision: str, device: str, gpu: GpuInfo | None, supported: Collection[str]
) -> str:
    """``auto`` as the best mixed precision this device and backend run: bf16 on GPUs with
    compute capability 8.0 or newer (A10G, L4, A100, H100, ...), fp16 on older ones (V100,
    T4) or where the backend has no bf16, fp32 on the CPU. Other precisions pass through."""
    if precision != "auto":
        return precision
    if not device.startswith("cuda"):
        return "fp32"
    cap = gpu.compute_capability if gpu is not None else None
    if "bf16" in supported and cap is not None and cap >= BF16_MIN_CAPABILITY:
        return "bf16"
    return "fp16" if "fp16" in supported else "fp32"


def default_gpus() -> list[GpuInfo]:
    """The GPUs this process's CUDA programs will see."""
    return visible_gpus(query_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def _int_or_none(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def _capability(text: str) -> tuple[int, int] | None:
    try:
        major, minor = text.split(".")
        return int(major), int(minor)
    except ValueError:
        return None
