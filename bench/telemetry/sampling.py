"""Background samplers of device state: NVML (``nvidia-ml-py``), ``nvidia-smi`` as a
fallback, and the host (psutil) when there is no GPU.

Each sampler runs in a thread that sleeps on an event between samples (no busy wait) and
keeps every sample; the telemetry session cuts them to the measured window afterwards.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

DEFAULT_INTERVAL_S = 0.1

#: NVML clock event ("throttle") reason bits, from nvml.h.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: Reasons that mean the GPU ran slower than it could: a run that saw one is flagged.
PERFORMANCE_LIMITING = frozenset(
    {
        "sw_power_cap",
        "hw_slowdown",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
    }
)


def throttle_names(mask: int | None) -> list[str]:
    if not mask:
        return []
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"unknown_0x{unknown:x}"] if unknown else [])


@dataclass
class GpuSample:
    """One reading of one GPU. ``None`` where the GPU or the source does not report it."""

    t_unix: float
    gpu: int
    util_gpu_pct: float | None = None
    util_mem_pct: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temp_c: float | None = None
    pstate: int | None = None
    throttle_mask: int | None = None
    energy_mj: int | None = None


@dataclass
class HostSample:
    t_unix: float
    cpu_pct: float | None = None
    process_rss_mib: float | None = None


class Sampler:
    """A thread calling ``read()`` every ``interval_s`` until stopped."""

    source = "none"

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("the sampling interval must be positive")
        self.interval_s = interval_s
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def read(self) -> list[Any]:
        raise NotImplementedError

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.samples.extend(self.read())
            except Exception as exc:  # noqa: BLE001 - keep sampling; report in the result
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            wait = self.interval_s - (time.monotonic() - started)
            if self._stop.wait(max(wait, 0.0)):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.samples.extend(self.read())  # one last reading at the end
        self.close()

    def close(self) -> None:
        pass

    # Readings at phase boundaries, taken right after a device synchronize.
    def energy_mj(self) -> int | None:
        return None

    def other_processes(self) -> list[int] | None:
        return None


class NvmlSampler(Sampler):
    """Samples the given NVML device handles (matched to the framework's devices)."""

    source = "nvml"

    def __init__(self, nvml: Any, handles: dict[int, Any], interval_s: float) -> None:
        super().__init__(interval_s)
        self.nvml = nvml
        self.handles = handles
        self._energy_ok = all(self._energy(h) is not None for h in handles.values())

    def _try(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return None

    def _energy(self, handle: Any) -> int | None:
        value = self._try(self.nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        return int(value) if value is not None else None

    def read(self) -> list[GpuSample]:
        nv, now = self.nvml, time.time()
        out = []
        for index, h in self.handles.items():
            util = self._try(nv.nvmlDeviceGetUtilizationRates, h)
            mem = self._try(nv.nvmlDeviceGetMemoryInfo, h)
            power = self._try(nv.nvmlDeviceGetPowerUsage, h)
            limit = self._try(nv.nvmlDeviceGetEnforcedPowerLimit, h)
            reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or (
                nv.nvmlDeviceGetCurrentClocksThrottleReasons
            )
            out.append(
                GpuSample(
                    t_unix=now,
                    gpu=index,
                    util_gpu_pct=util.gpu if util else None,
                    util_mem_pct=util.memory if util else None,
                    mem_used_mib=mem.used / 2**20 if mem else None,
                    mem_total_mib=mem.total / 2**20 if mem else None,
                    power_w=power / 1000 if power is not None else None,
                    power_limit_w=limit / 1000 if limit is not None else None,
                    sm_clock_mhz=self._try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                    mem_clock_mhz=self._try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
                    temp_c=self._try(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                    pstate=self._pstate(h),
                    throttle_mask=self._try(reasons, h),
                    energy_mj=self._energy(h) if self._energy_ok else None,
                )
            )
        return out

    def _pstate(self, handle: Any) -> int | None:
        """P0..P15; NVML_PSTATE_UNKNOWN (32) is no reading, not a state."""
        state = self._try(self.nvml.nvmlDeviceGetPerformanceState, handle)
        return state if isinstance(state, int) and 0 <= state <= 15 else None

    def energy_mj(self) -> int | None:
        if not self._energy_ok:
            return None
        values = [self._energy(h) for h in self.handles.values()]
        present = [v for v in values if v is not None]
        return sum(present) if len(present) == len(values) else None

    def other_processes(self) -> list[int] | None:
        pids: set[int] = set()
        for h in self.handles.values():
            procs = self._try(self.nvml.nvmlDeviceGetComputeRunningProcesses, h)
            if procs is None:
                return None
            pids.update(p.pid for p in procs)
        pids.discard(os.getpid())
        return sorted(pids)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


#: Fields asked of ``nvidia-smi --query-gpu`` by the fallback sampler, in this order.
SMI_FIELDS = (
    "timestamp",
    "index",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "power.draw",
    "power.limit",
    "clocks.sm",
    "clocks.mem",
    "temperature.gpu",
    "pstate",
    "clocks_throttle_reasons.active",
)


def parse_smi_line(line: str) -> GpuSample | None:
    """One line of ``nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits``.

    ``[N/A]`` and ``[Not Supported]`` become ``None``. Returns ``None`` for lines that are
    not samples (blank lines, a header).
    """
    row = next(csv.reader(io.StringIO(line)), None)
    if not row or len(row) != len(SMI_FIELDS):
        return None
    cells = [c.strip() for c in row]
    try:
        t = datetime.strptime(cells[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
        index = int(cells[1])
    except ValueError:
        return None

    def num(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    pstate = cells[11]
    mask = cells[12]
    return GpuSample(
        t_unix=t,
        gpu=index,
        util_gpu_pct=num(cells[2]),
        util_mem_pct=num(cells[3]),
        mem_used_mib=num(cells[4]),
        mem_total_mib=num(cells[5]),
        power_w=num(cells[6]),
        power_limit_w=num(cells[7]),
        sm_clock_mhz=num(cells[8]),
        mem_clock_mhz=num(cells[9]),
        temp_c=num(cells[10]),
        pstate=int(pstate[1:]) if pstate.startswith("P") and pstate[1:].isdigit() else None,
        throttle_mask=int(mask, 16) if mask.startswith("0x") else None,
    )


class SmiSampler(Sampler):
    """``nvidia-smi -lms`` in a subprocess, for when NVML cannot be loaded here.

    No energy counter through this path: energy comes from integrating power samples.
    """

    source = "nvidia-smi"

    def __init__(self, exe: str, indices: dict[int, int], interval_s: float) -> None:
        super().__init__(interval_s)
        self.exe = exe
        self.indices = indices  # our gpu label -> nvidia-smi index
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        ids = ",".join(str(i) for i in self.indices.values())
        cmd = [
            self.exe,
            f"--query-gpu={','.join(SMI_FIELDS)}",
            "--format=csv,noheader,nounits",
            f"--loop-ms={max(int(self.interval_s * 1000), 1)}",
            f"--id={ids}",
        ]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._thread = threading.Thread(target=self._pump, name="telemetry", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        label = {smi: ours for ours, smi in self.indices.items()}
        for line in self._proc.stdout:
            sample = parse_smi_line(line)
            if sample is not None and sample.gpu in label:
                sample.gpu = label[sample.gpu]
                self.samples.append(sample)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()


class HostSampler(Sampler):
    """CPU utilization and this process's memory, for runs without a GPU."""

    source = "psutil"

    def __init__(self, interval_s: float) -> None:
        super().__init__(interval_s)
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        psutil.cpu_percent(None)  # the first call only sets the reference point

    def read(self) -> list[HostSample]:
        return [
            HostSample(
                t_unix=time.time(),
                cpu_pct=self._psutil.cpu_percent(None),
                process_rss_mib=self._process.memory_info().rss / 2**20,
            )
        ]


def load_nvml() -> tuple[Any | None, str | None]:
    """The initialised ``pynvml`` module, or ``None`` and why not."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, driver missing, ...
        return None, f"NVML could not be initialised: {exc}"
    return pynvml, None


def smi_executable() -> str | None:
    return shutil.which("nvidia-smi")


def sample_dict(sample: GpuSample | HostSample) -> dict[str, Any]:
    return asdict(sample)
