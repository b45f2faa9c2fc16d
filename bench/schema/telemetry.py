"""The record's telemetry section: what the samplers and the FLOPs check report for the
measured window. The telemetry layer fills them in; the run record holds them."""

from __future__ import annotations

from dataclasses import dataclass, field

TELEMETRY_NOT_STARTED = "the run ended before telemetry sampling started"


@dataclass
class Mfu:
    mfu: float | None
    peak_tflops: float | None
    basis: str


@dataclass
class TelemetryGpu:
    index: int
    name: str
    uuid: str
    pci_bus_id: str
    matched_by: str


@dataclass
class HostSummary:
    samples_in_window: int
    cpu_mean_pct: float | None = None
    cpu_max_pct: float | None = None
    process_rss_peak_mib: float | None = None


@dataclass
class BusyProcess:
    """Another process busy on a CPU run's cores during its measured window."""

    pid: int
    name: str
    #: Percent of one core over the window.
    cpu_pct: float


@dataclass
class TelemetrySummary:
    """The measured window's device figures; GPU fields are None on CPU runs."""

    available: bool = False
    reason: str | None = TELEMETRY_NOT_STARTED
    source: str | None = None
    interval_s: float | None = None
    gpu: TelemetryGpu | None = None
    sampler_errors: list[str] = field(default_factory=list)
    host: HostSummary | None = None
    samples_in_window: int | None = None
    util_gpu_mean_pct: float | None = None
    util_gpu_max_pct: float | None = None
    util_mem_mean_pct: float | None = None
    mem_used_peak_mib: float | None = None
    mem_total_mib: float | None = None
    #: Mean power over the window: energy counter / window where the counter exists.
    power_mean_w: float | None = None
    #: ``nvml_energy_counter`` or ``sampled_mean`` (NVML's ~1 s power averages).
    power_method: str | None = None
    #: The mean of the sampled power readings, a second figure (lags the ramp).
    power_sampled_mean_w: float | None = None
    power_max_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mean_mhz: float | None = None
    mem_clock_mean_mhz: float | None = None
    temp_max_c: float | None = None
    pstates_seen: list[int] = field(default_factory=list)
    throttle_reasons_seen: list[str] = field(default_factory=list)
    throttled: bool = False
    energy_j: float | None = None
    energy_method: str | None = None
    energy_per_sample_j: float | None = None
    other_processes: list[int] | None = None
    #: CPU runs: other processes busy on the run's cores in the window (None: not checked).
    other_cpu_processes: list[BusyProcess] | None = None
    #: File name of the time series written beside the record.
    timeseries_csv: str | None = None

    @property
    def utilization_pct(self) -> float | None:
        """GPU utilization, or host CPU utilization on CPU runs."""
        if self.util_gpu_mean_pct is not None:
            return self.util_gpu_mean_pct
        return self.host.cpu_mean_pct if self.host is not None else None
