"""Result records as a plain-text table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from bench.telemetry.validity import FLAG_CODES, short_codes

HEADERS = (
    "workload",
    "backend",
    "mode",
    "prec",
    "batch",
    "shape",
    "device",
    "outcome",
    "samples/s",
    "p50 ms",
    "p99 ms",
    "CV %",
    "TFLOP/s",
    "MFU %",
    "util %",
    "W",
    "J/sample",
    "flags",
)


def device_name(record: dict[str, Any]) -> str:
    device = record["spec"]["device"]
    env = record.get("environment") or {}
    if device.startswith("cuda"):
        name = (env.get("framework") or {}).get("device_name")
        if not name:
            gpus = env.get("gpus") or []
            ordinal = int(device.split(":")[1]) if ":" in device else 0
            name = gpus[ordinal]["name"] if ordinal < len(gpus) else device
        return str(name)
    cpu = env.get("cpu_model") or "CPU"
    cores = env.get("cpu_count_usable") or env.get("cpu_count_logical")
    return f"{cpu} ({cores} cores)" if cores else str(cpu)


def row(record: dict[str, Any]) -> list[Any]:
    spec = record["spec"]
    outcome = record["outcome"]["status"]
    tput = record.get("throughput") or {}
    lat = record.get("latency") or {}
    tele = record.get("telemetry") or {}
    shape = {"bert": f"seq {spec['seq_len']}", "ssd": f"{spec['image_size']}px"}
    cv = lat.get("cv")
    unreliable = set(lat.get("unreliable_percentiles") or [])
    p99 = _num(lat.get("p99_ms"), 2)
    return [
        spec["workload"],
        spec["backend"],
        spec["mode"],
        spec["precision"],
        spec["batch"],
        shape.get(spec["workload"], ""),
        device_name(record),
        outcome,
        _num(tput.get("samples_per_s"), 2),
        _num(lat.get("p50_ms"), 2),
        f"{p99}*" if p99 != "" and "p99" in unreliable else p99,
        _num(cv * 100 if cv is not None else None, 1),
        _num(tput.get("tflops_per_s"), 3),
        _num(_pct((tput.get("mfu") or {}).get("mfu")), 1),
        _num(tele.get("util_gpu_mean_pct", (tele.get("host") or {}).get("cpu_mean_pct")), 0),
        _num(tele.get("power_mean_w"), 0),
        _num(tele.get("energy_per_sample_j"), 3),
        short_codes(record),
    ]


def render(records: Iterable[dict[str, Any]], fmt: str = "github") -> str:
    records = list(records)
    text = tabulate([row(r) for r in records], headers=HEADERS, tablefmt=fmt, disable_numparse=True)
    notes = []
    if any(
        "p99" in ((r.get("latency") or {}).get("unreliable_percentiles") or []) for r in records
    ):
        notes.append("* p99 from fewer than 100 iterations: an interpolation, not a tail estimate")
    if any(short_codes(r) for r in records):
        legend = ", ".join(f"{short}={code}" for code, short in FLAG_CODES.items())
        notes.append(f"flags: {legend} (details in each result's validity section)")
        notes.append("util %: GPU utilization, or host CPU utilization on CPU runs")
    failed = [r for r in records if r["outcome"]["status"] != "ok"]
    for r in failed:
        notes.append(f"{r['run_id']}: {r['outcome']['status']}: {r['outcome'].get('message')}")
    return "\n".join([text, *notes])


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def _num(value: float | None, digits: int) -> str:
    """Fixed decimals, or three significant figures for values under 1 (the null workload's
    microsecond latencies would otherwise print as 0.00)."""
    if value is None:
        return ""
    if value != 0 and abs(value) < 1:
        return f"{value:.3g}"
    return f"{value:,.{digits}f}"
