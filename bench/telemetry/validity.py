"""Flags for what can invalidate a run's numbers. Each is a code and a sentence."""

from __future__ import annotations

from typing import Any

#: Latency coefficient of variation above which a run is flagged as noisy.
CV_THRESHOLD = 0.05
#: NVML's power readings are averaged over about one second on recent GPUs, and the
#: energy counter moves in steps of tens of milliseconds: a shorter window's energy is
#: mostly edge effects.
ENERGY_MIN_WINDOW_S = 1.0

FLAG_CODES = {
    "throttled": "thr",
    "other_processes": "procs",
    "short_energy_window": "short",
    "high_cv": "cv",
    "few_iterations": "few",
}


def validity_flags(record: dict[str, Any]) -> list[dict[str, str]]:
    flags: list[dict[str, str]] = []

    def flag(code: str, message: str) -> None:
        flags.append({"code": code, "message": message})

    tele = record.get("telemetry") or {}
    timing = record.get("timing") or {}
    latency = record.get("latency") or {}
    if tele.get("throttled"):
        reasons = ", ".join(tele.get("throttle_reasons_seen") or [])
        flag("throttled", f"the GPU limited its clocks during the measured window ({reasons})")
    if tele.get("other_processes"):
        pids = ", ".join(map(str, tele["other_processes"]))
        flag("other_processes", f"other processes used the GPU during the run (pids {pids})")
    window = timing.get("window_s")
    if tele.get("energy_j") is not None and window is not None and window < ENERGY_MIN_WINDOW_S:
        flag(
            "short_energy_window",
            f"measured window {window:.3f} s is shorter than {ENERGY_MIN_WINDOW_S} s: "
            "energy and power figures are unreliable",
        )
    cv = latency.get("cv")
    if cv is not None and cv > CV_THRESHOLD:
        flag("high_cv", f"latency coefficient of variation {cv:.1%} is above {CV_THRESHOLD:.0%}")
    unreliable = latency.get("unreliable_percentiles") or []
    if unreliable:
        flag(
            "few_iterations",
            f"{latency.get('count')} iterations are too few for {', '.join(unreliable)}",
        )
    return flags


def short_codes(record: dict[str, Any]) -> str:
    flags = (record.get("validity") or {}).get("flags") or []
    return ",".join(FLAG_CODES.get(f["code"], f["code"]) for f in flags)
