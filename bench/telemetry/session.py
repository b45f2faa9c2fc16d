"""Telemetry of one run: which GPU to watch, sampling around the timed loop, and the
summary of the measured window that goes into the result."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.schema.gpu import GpuInfo
from bench.schema.telemetry import HostSummary, TelemetryGpu, TelemetrySummary
from bench.telemetry.contention import CpuWatch, ProcessUse, busy_others, own_facts
from bench.telemetry.devices import visible_gpus
from bench.telemetry.sampling import (
    DEFAULT_INTERVAL_S,
    PERFORMANCE_LIMITING,
    GpuSample,
    HostSample,
    HostSampler,
    NvmlSampler,
    Sampler,
    SmiSampler,
    load_nvml,
    sample_dict,
    smi_executable,
    throttle_names,
)


def _bus_key(bus_id: str | None) -> tuple[int, int, int, int] | None:
    """``00000000:19:00.0`` (NVML, nvidia-smi) and ``0000:19:00.0`` alike, as numbers."""
    if not bus_id:
        return None
    try:
        domain, bus, rest = bus_id.strip().split(":")
        device, function = rest.split(".")
        return int(domain, 16), int(bus, 16), int(device, 16), int(function, 16)
    except ValueError:
        return None


def _uuid_key(uuid: str | None) -> str | None:
    if not uuid:
        return None
    text = uuid.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def match_gpu(
    device: str, framework: dict[str, Any], gpus: Sequence[GpuInfo], cuda_visible: str | None
) -> tuple[GpuInfo | None, str]:
    """The physical GPU behind ``cuda:N``, and how it was identified.

    By PCI bus id or UUID when the framework reports them (immune to CUDA_VISIBLE_DEVICES
    and CUDA_DEVICE_ORDER); else by ordinal among the visible GPUs, which is right because
    the runner starts workers with CUDA_DEVICE_ORDER=PCI_BUS_ID, nvidia-smi's order.
    """
    if not device.startswith("cuda:"):
        return None, "not a GPU run"
    bus = _bus_key(framework.get("device_pci_bus_id"))
    if bus is not None:
        for gpu in gpus:
            if _bus_key(gpu.pci_bus_id) == bus:
                return gpu, "pci_bus_id"
    uuid = _uuid_key(framework.get("device_uuid"))
    if uuid is not None:
        for gpu in gpus:
            if _uuid_key(gpu.uuid) == uuid:
                return gpu, "uuid"
    visible = visible_gpus(list(gpus), cuda_visible)
    ordinal = int(device.split(":")[1])
    if ordinal < len(visible):
        order = os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
        return visible[ordinal], f"ordinal (CUDA_DEVICE_ORDER={order})"
    return None, f"{device} not among the {len(visible)} visible GPU(s)"


class Telemetry:
    """Samples during a run; ``mark()`` at phase boundaries, right after a device sync."""

    def __init__(
        self,
        sampler: Sampler | None,
        *,
        gpu: GpuInfo | None = None,
        match: str = "",
        absent_reason: str | None = None,
        cpu_watch: CpuWatch | None = None,
    ) -> None:
        self.sampler = sampler
        #: CPU runs: other processes' CPU use over the measured window.
        self.cpu_watch = cpu_watch
        self.cpu_uses: list[ProcessUse] | None = None
        self.gpu = gpu
        self.match = match
        self.absent_reason = absent_reason
        self.marks: dict[str, float] = {}
        self.energy_marks_mj: dict[str, int | None] = {}
        self.other_pids: dict[str, list[int] | None] = {}

    @classmethod
    def open(
        cls,
        device: str,
        framework: dict[str, Any],
        gpus: Sequence[GpuInfo],
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> Telemetry:
        if not device.startswith("cuda"):
            return cls(
                HostSampler(interval_s),
                absent_reason="CPU run: no GPU to sample",
                cpu_watch=CpuWatch(),
            )
        gpu, how = match_gpu(device, framework, gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if gpu is None:
            return cls(HostSampler(interval_s), absent_reason=f"GPU not identified: {how}")
        nvml, why = load_nvml()
        if nvml is not None:
            try:
                handle = nvml.nvmlDeviceGetHandleByPciBusId(gpu.pci_bus_id.encode())
            except Exception as exc:  # noqa: BLE001
                why = f"NVML has no device at {gpu.pci_bus_id}: {exc}"
                with contextlib.suppress(Exception):  # balance nvmlInit: it is not used
                    nvml.nvmlShutdown()
            else:
                return cls(NvmlSampler(nvml, {gpu.index: handle}, interval_s), gpu=gpu, match=how)
        exe = smi_executable()
        if exe is not None:
            return cls(SmiSampler(exe, {gpu.index: gpu.index}, interval_s), gpu=gpu, match=how)
        return cls(HostSampler(interval_s), absent_reason=f"{why}; no nvidia-smi either")

    def __enter__(self) -> Telemetry:
        if self.sampler is not None:
            self.sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def mark(self, phase: str, t_unix: float) -> None:
        self.marks[phase] = t_unix
        if self.sampler is not None and phase in ("measure_start", "measure_end"):
            self.energy_marks_mj[phase] = self.sampler.energy_mj()
            self.other_pids[phase] = self.sampler.other_processes()
        if self.cpu_watch is not None and phase == "measure_start":
            self.cpu_watch.start()
        if self.cpu_watch is not None and phase == "measure_end":
            self.cpu_uses = self.cpu_watch.stop()

    @property
    def source(self) -> str:
        return self.sampler.source if self.sampler is not None else "none"

    def summary(self, measured_samples: int) -> TelemetrySummary:
        samples = self.sampler.samples if self.sampler is not None else []
        start, end = self.marks.get("measure_start"), self.marks.get("measure_end")
        out = TelemetrySummary(
            available=self.absent_reason is None and start is not None,
            reason=self.absent_reason,
            source=self.source,
            interval_s=self.sampler.interval_s if self.sampler else None,
            gpu=(
                TelemetryGpu(
                    index=self.gpu.index,
                    name=self.gpu.name,
                    uuid=self.gpu.uuid,
                    pci_bus_id=self.gpu.pci_bus_id,
                    matched_by=self.match,
                )
                if self.gpu
                else None
            ),
            sampler_errors=list(self.sampler.errors) if self.sampler else [],
        )
        if start is None or end is None:
            out.available = False
            out.reason = out.reason or "the run did not reach its measured window"
            return out
        window = [s for s in samples if start <= s.t_unix <= end]
        gpu_samples = [s for s in window if isinstance(s, GpuSample)]
        host_samples = [s for s in window if isinstance(s, HostSample)]
        if host_samples or not gpu_samples:
            out.host = summarize_host(host_samples)
        if self.cpu_uses is not None:
            out.other_cpu_processes = busy_others(self.cpu_uses, own_facts())
        if self.gpu is not None:
            energy = self._counter_energy_j()
            figures = summarize_gpu(
                gpu_samples, end - start, measured_samples, energy_counter_j=energy
            )
            out = dataclasses.replace(out, **figures)
            pids = sorted({p for v in self.other_pids.values() if v for p in v})
            out.other_processes = (
                pids if any(v is not None for v in self.other_pids.values()) else None
            )
        return out

    def _counter_energy_j(self) -> float | None:
        a = self.energy_marks_mj.get("measure_start")
        b = self.energy_marks_mj.get("measure_end")
        return (b - a) / 1000.0 if a is not None and b is not None else None

    def rows(self) -> list[dict[str, Any]]:
        """Every sample with its phase, for the CSV beside the result."""
        samples = self.sampler.samples if self.sampler is not None else []
        return [{"phase": phase_of(s.t_unix, self.marks), **sample_dict(s)} for s in samples]


def phase_of(t: float, marks: dict[str, float]) -> str:
    if "warmup_start" not in marks or t < marks["warmup_start"]:
        return "setup"
    if "measure_start" not in marks or t < marks["measure_start"]:
        return "warmup"
    if "measure_end" not in marks or t <= marks["measure_end"]:
        return "measure"
    return "teardown"


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _max(values: list[float]) -> float | None:
    return max(values) if values else None


def _present(samples: Sequence[Any], name: str) -> list[float]:
    return [v for s in samples if (v := getattr(s, name)) is not None]


def summarize_gpu(
    samples: Sequence[GpuSample],
    window_s: float,
    measured_samples: int,
    *,
    energy_counter_j: float | None = None,
) -> dict[str, Any]:
    """The measured window's GPU figures from its samples.

    Energy is the NVML counter's delta when given (Volta and newer); otherwise mean power
    times the window, with ``energy_method`` saying which. Mean power is energy over the
    window when the counter gave it: NVML's power reading is a ~1 s average that lags the
    ramp at the window's start, so the sampled mean (``power_sampled_mean_w``) runs low.
    """
    power = _present(samples, "power_w")
    sampled_mean = _mean(power)
    throttles = sorted({n for s in samples for n in throttle_names(s.throttle_mask)})
    if energy_counter_j is not None:
        energy, method = energy_counter_j, "nvml_energy_counter"
    elif power:
        energy, method = statistics.fmean(power) * window_s, "mean_power_x_window"
    else:
        energy, method = None, None
    return {
        "samples_in_window": len(samples),
        "util_gpu_mean_pct": _mean(_present(samples, "util_gpu_pct")),
        "util_gpu_max_pct": _max(_present(samples, "util_gpu_pct")),
        "util_mem_mean_pct": _mean(_present(samples, "util_mem_pct")),
        "mem_used_peak_mib": _max(_present(samples, "mem_used_mib")),
        "mem_total_mib": _max(_present(samples, "mem_total_mib")),
        "power_mean_w": (
            energy_counter_j / window_s
            if energy_counter_j is not None and window_s > 0
            else sampled_mean
        ),
        "power_method": (
            "nvml_energy_counter"
            if energy_counter_j is not None and window_s > 0
            else ("sampled_mean" if power else None)
        ),
        "power_sampled_mean_w": sampled_mean,
        "power_max_w": _max(power),
        "power_limit_w": _max(_present(samples, "power_limit_w")),
        "sm_clock_mean_mhz": _mean(_present(samples, "sm_clock_mhz")),
        "mem_clock_mean_mhz": _mean(_present(samples, "mem_clock_mhz")),
        "temp_max_c": _max(_present(samples, "temp_c")),
        "pstates_seen": sorted({s.pstate for s in samples if s.pstate is not None}),
        "throttle_reasons_seen": throttles,
        "throttled": bool(PERFORMANCE_LIMITING.intersection(throttles)),
        "energy_j": energy,
        "energy_method": method,
        "energy_per_sample_j": energy / measured_samples
        if energy is not None and measured_samples
        else None,
    }


def summarize_host(samples: Sequence[HostSample]) -> HostSummary:
    return HostSummary(
        samples_in_window=len(samples),
        cpu_mean_pct=_mean(_present(samples, "cpu_pct")),
        cpu_max_pct=_max(_present(samples, "cpu_pct")),
        process_rss_peak_mib=_max(_present(samples, "process_rss_mib")),
    )


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """The time series beside the result, one row per sample, columns in order of appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
