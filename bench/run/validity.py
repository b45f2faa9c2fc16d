"""Flags for what can invalidate a run's numbers. Each is a code and a sentence."""

from __future__ import annotations

from bench.schema.record import Flag, RunRecord

#: Latency coefficient of variation above which a run is flagged as noisy.
CV_THRESHOLD = 0.05
#: Shortest window whose energy and mean power are trusted, by how they were measured.
#: The energy counter is read at both edges of the window; it advances in steps of at most
#: 100 ms (it moved in every 100 ms sample of the H200 reference runs), so the edges cost at
#: most 2 x 0.1 s of energy: under 10 % from 2 s on. NVML's power reading is an average over
#: about 1 s, so a mean of samples misses up to ~1 s of the ramp at the window's start:
#: under 10 % from 10 s on.
ENERGY_MIN_WINDOW_S = {"nvml_energy_counter": 2.0, "mean_power_x_window": 10.0}
#: Model-FLOPs utilization above this is impossible: the FLOP count or the math mode
#: (and so the peak) is wrong.
MFU_MAX = 1.0

FLAG_CODES = {
    "throttled": "thr",
    "other_processes": "procs",
    "short_energy_window": "short",
    "mfu_above_peak": "mfu",
    "high_cv": "cv",
    "few_iterations": "few",
    "random_weights": "random",
    "loadgen_invalid": "INVALID",
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
    if tele.other_cpu_processes:
        busy = ", ".join(f"{p.pid} {p.name} {p.cpu_pct:g}%" for p in tele.other_cpu_processes)
        flag(
            "other_processes",
            "other processes were busy on the run's CPU cores during the measured window "
            f"(pid, name, % of a core: {busy})",
        )
    window = timing.window_s if timing is not None else None
    least = ENERGY_MIN_WINDOW_S.get(tele.energy_method or "")
    if tele.energy_j is not None and window is not None and least and window < least:
        flag(
            "short_energy_window",
            f"measured window {window:.3f} s is shorter than {least} s, the least for "
            f"energy by {tele.energy_method}: energy and power figures are unreliable",
        )
    mfu = record.throughput.mfu if record.throughput is not None else None
    if mfu is not None and mfu.mfu is not None and mfu.mfu > MFU_MAX:
        flag(
            "mfu_above_peak",
            f"model-FLOPs utilization {mfu.mfu:.0%} exceeds the {mfu.peak_tflops} TFLOP/s "
            f"peak ({mfu.basis}): the FLOP count or the fp32 math mode is wrong",
        )
    scenario = record.scenario
    if scenario is not None and scenario.name == "evaluate" and record.spec.pretrained is None:
        flag(
            "random_weights",
            "the evaluation scored randomly initialised weights (no --pretrained): the metric "
            "says nothing about the model",
        )
    if record.loadgen_valid is False:
        result = record.scenario.result if record.scenario is not None else None
        reasons = "; ".join(map(str, (result or {}).get("invalid_reasons") or [])) or "no reason"
        flag("loadgen_invalid", f"LoadGen judged the run INVALID: {reasons}")
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
    codes = dict.fromkeys(f.code for f in record.validity.flags)  # a code once, in order
    return ",".join(FLAG_CODES.get(code, code) for code in codes)
