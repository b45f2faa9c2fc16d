"""``bench monitor``: a live view of the GPUs to leave running beside a job, like
``watch nvidia-smi`` with the harness's own fields (throttle reasons, power against limit)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any, TextIO

from tabulate import tabulate

from bench.telemetry.devices import query_gpus
from bench.telemetry.sampling import (
    SMI_FIELDS,
    GpuSample,
    HostSampler,
    NvmlSampler,
    load_nvml,
    parse_smi_line,
    smi_executable,
    throttle_names,
)

HEADERS = (
    "gpu",
    "name",
    "util %",
    "mem util %",
    "memory MiB",
    "power W",
    "SM MHz",
    "mem MHz",
    "temp C",
    "pstate",
    "throttle",
)
CLEAR = "\x1b[H\x1b[2J"


class GpuReader:
    """Reads every GPU once per call: NVML, else one ``nvidia-smi`` query per call."""

    def __init__(self) -> None:
        self.names = {g.index: g.name for g in query_gpus()}
        nvml, self.why = load_nvml()
        self.nvml_sampler: NvmlSampler | None = None
        if nvml is not None:
            count = nvml.nvmlDeviceGetCount()
            handles = {i: nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)}
            self.nvml_sampler = NvmlSampler(nvml, handles, interval_s=1.0)
        self.smi = smi_executable()
        self.source = "nvml" if self.nvml_sampler else ("nvidia-smi" if self.smi else None)

    def read(self) -> list[GpuSample]:
        if self.nvml_sampler is not None:
            return self.nvml_sampler.read()
        if self.smi is None:
            return []
        out = subprocess.run(
            [self.smi, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return [s for line in out.stdout.splitlines() if (s := parse_smi_line(line))]

    def close(self) -> None:
        if self.nvml_sampler is not None:
            self.nvml_sampler.close()


def gpu_rows(samples: list[GpuSample], names: dict[int, str]) -> list[list[Any]]:
    def f(value: float | None, fmt: str = ".0f") -> str:
        return "-" if value is None else format(value, fmt)

    rows = []
    for s in samples:
        mem = f"{f(s.mem_used_mib)} / {f(s.mem_total_mib)}"
        power = f"{f(s.power_w)} / {f(s.power_limit_w)}"
        throttle = ",".join(n for n in throttle_names(s.throttle_mask) if n != "gpu_idle")
        rows.append(
            [
                s.gpu,
                names.get(s.gpu, "?"),
                f(s.util_gpu_pct),
                f(s.util_mem_pct),
                mem,
                power,
                f(s.sm_clock_mhz),
                f(s.mem_clock_mhz),
                f(s.temp_c),
                "-" if s.pstate is None else f"P{s.pstate}",
                throttle or "-",
            ]
        )
    return rows


def run_monitor(interval_s: float, count: int | None, stream: TextIO = sys.stdout) -> int:
    """Refresh every ``interval_s`` until interrupted, or ``count`` times."""
    reader = GpuReader()
    host = HostSampler(interval_s)
    clear = stream.isatty()
    stop = threading.Event()
    shown = 0
    try:
        while count is None or shown < count:
            samples = reader.read()
            lines = [
                f"bench monitor  {time.strftime('%H:%M:%S')}  every {interval_s:g} s"
                f"  source: {reader.source or 'none'}  (Ctrl-C to stop)"
            ]
            if samples:
                lines.append(
                    tabulate(
                        gpu_rows(samples, reader.names), headers=HEADERS, disable_numparse=True
                    )
                )
            else:
                lines.append(f"no NVIDIA GPU to show ({reader.why or 'nvidia-smi not found'})")
            h = host.read()[0]
            lines.append(f"host: CPU {h.cpu_pct:.0f} %")
            stream.write((CLEAR if clear else "") + "\n".join(lines) + "\n")
            stream.flush()
            shown += 1
            if count is not None and shown >= count:
                break
            stop.wait(interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return 0
