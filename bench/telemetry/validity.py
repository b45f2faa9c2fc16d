"""Flags for what can invalidate a run's numbers. Each is a code and a sentence."""

from __future__ import annotations

from bench.run.record import Flag, RunRecord

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


def validity_flags(record: RunRecord) -> list[Flag]:
    flags: list[Flag] = []

    def flag(code: str, message: str) -> None:
        flags.append(Flag(code=code, message=message))

    tele, timing, latency = record.telemetry, record.timing, record.latency
    if tele.throttled:
        reasons = ", ".join(tele.throttle_reasons_seen)
        flag("throttled", f"the GPU limited its clocks during the measured window ({reasons})")
    if tele.other_processes:
        pids = ", ".join(map(str, tele.other_processes))
        flag("other_processes", f"other processes used the GPU during the run (pids {pids})")
    window = timing.window_s if timing is not None else None
    if tele.energy_j is not None and window is not None and window < ENERGY_MIN_WINDOW_S:
        flag(
            "short_energy_window",
            f"measured window {window:.3f} s is shorter than {ENERGY_MIN_WINDOW_S} s: "
            "energy and power figures are unreliable",
        )
    if latency is not None:
        if latency.cv is not None and latency.cv > CV_THRESHOLD:
            flag(
                "high_cv",
                f"latency coefficient of variation {latency.cv:.1%} is above {CV_THRESHOLD:.0%}",
            )
        if latency.unreliable_percentiles:
            flag(
                "few_iterations",
                f"{latency.count} iterations are too few for "
                f"{', '.join(latency.unreliable_percentiles)}",
            )
    return flags


def short_codes(record: RunRecord) -> str:
    return ",".join(FLAG_CODES.get(f.code, f.code) for f in record.validity.flags)
