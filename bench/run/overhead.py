"""How much does the harness cost? The timed loop of :mod:`bench.run.loop` against a bare
hand-written loop over the same step, in one process, rounds interleaved.

    python -m bench.run.overhead [--workload bert --batch 1 --seq-len 64 --rounds 7 --iters 20]
                                 [--fast]

The bare loop is what a person would write: ``for _ in range(n): step(); sync()`` between
two clock reads (pipelined: ``for _ in range(n): step()`` then one ``sync()``). The harness
adds a clock read, a list append and a progress-bar update per iteration (pipelined: a
device event per step instead of the clock read); the third variant also runs the telemetry
sampler thread. The ratios of the medians are the overheads; the null workload's
per-iteration time is the harness cost in absolute terms. ``--fast`` repeats the comparison
for the execution modes of the ``fast`` suite (compiled, graph-captured on a GPU, synchronized
and pipelined) on the same compiled step, and says whether each agrees within 2 %.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import registry
from bench.run.loop import StepTimer, measure, measure_pipelined
from bench.run.registry import run_label
from bench.run.scenarios import RunContext
from bench.schema.spec import RunSpec
from bench.telemetry.devices import default_gpus, query_gpus, resolve_device
from bench.telemetry.sampling import DEFAULT_INTERVAL_S
from bench.telemetry.session import Telemetry


def bare_loop(step: Any, sync: Any, iters: int) -> float:
    """Seconds per iteration of the plainest correct loop."""
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
        sync()
    return (time.perf_counter() - start) / iters


def bare_pipelined_loop(step: Any, sync: Any, iters: int) -> float:
    """Seconds per iteration of the plainest correct queued loop: one sync at the end."""
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) / iters


#: A fast mode agrees with its hand-written loop when the medians differ by less than this.
AGREEMENT = 0.02


def harness_pipelined_loop(
    step: Any,
    sync: Any,
    iters: int,
    timer: StepTimer | None,
    telemetry: Telemetry | None = None,
) -> float:
    m = measure_pipelined(
        step,
        sync,
        timer,
        warmup=0,
        iters=iters,
        duration_s=None,
        progress=True,
        stream=io.StringIO(),
        on_mark=telemetry.mark if telemetry else None,
    )
    return m.window_s / m.iterations


def harness_loop(step: Any, sync: Any, iters: int, telemetry: Telemetry | None = None) -> float:
    m = measure(
        step,
        sync,
        warmup=0,
        iters=iters,
        duration_s=None,
        progress=True,
        stream=io.StringIO(),
        on_mark=telemetry.mark if telemetry else None,
    )
    return m.window_s / m.iterations


def interleaved_rounds(
    spec: RunSpec, rounds: int, iters: int, telemetry_interval_s: float | None = None
) -> dict[str, Any]:
    """Median seconds per iteration of each loop over ``rounds`` interleaved rounds: bare,
    harness, and (with ``telemetry_interval_s``) harness with the telemetry sampler on."""
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    workload = registry.workload_class(entry)(spec)
    workload.setup()
    framework = registry.framework_info(spec.backend, spec.device)
    for _ in range(spec.warmup):
        workload.step()
    workload.sync()

    pipelined = spec.timing == "pipelined"
    timer = workload.step_timer(time.perf_counter) if pipelined else None

    def harness(step: Any, sync: Any, n: int, tele: Telemetry | None = None) -> float:
        if pipelined:
            return harness_pipelined_loop(step, sync, n, timer, tele)
        return harness_loop(step, sync, n, tele)

    def with_telemetry(step: Any, sync: Any, n: int) -> float:
        assert telemetry_interval_s is not None
        gpus = query_gpus()
        with Telemetry.open(spec.device, framework, gpus, telemetry_interval_s) as tele:
            return harness(step, sync, n, tele)

    loops: dict[str, Callable[[Any, Any, int], float]] = {
        "bare": bare_pipelined_loop if pipelined else bare_loop,
        "harness": harness,
    }
    if telemetry_interval_s:
        loops["telemetry"] = with_telemetry
    times: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for i in range(rounds):
        # rotate which goes first so that drifts (clocks, caches) hit all alike
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(loops[name](workload.step, workload.sync, iters))
    workload.teardown()
    med = {name: statistics.median(v) for name, v in times.items()}
    out = {
        "spec": spec.to_dict(),
        "rounds": rounds,
        "iters_per_round": iters,
        "s_per_iter": med,
        "rounds_s": times,
        "overhead_ratio": med["harness"] / med["bare"],
        "round_spread_bare": (max(times["bare"]) - min(times["bare"])) / med["bare"],
    }
    if "telemetry" in med:
        out["telemetry_interval_s"] = telemetry_interval_s
        out["telemetry_ratio"] = med["telemetry"] / med["harness"]
    return out


def sut_rounds(spec: RunSpec, rounds: int, duration_s: float) -> dict[str, Any]:
    """The batching SUT's own cost per query: LoadGen single-stream queries of one sample
    against the fixed loop's batch-1 steps of the same set-up workload, rounds interleaved.

    Both include the device synchronize; the difference is what the SUT adds (LoadGen's
    issue call, the hand-off to the batcher thread, the gather of the staged sample, the
    completion call), in microseconds per query and as a ratio."""
    from bench.run.loadgen import SingleStream

    spec = spec.replace(batch=1, mode="infer")
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    workload = registry.workload_class(entry)(spec)
    workload.setup()
    workload.stage_samples(64)
    loop_s: list[float] = []
    sut_s: list[float] = []
    for _ in range(rounds):
        # the loop for about half the round's time, then single-stream queries for as long
        m = measure(
            workload.step,
            workload.sync,
            warmup=spec.warmup,
            iters=None,
            duration_s=duration_s,
            progress=False,
            stream=io.StringIO(),
        )
        loop_s.append(m.window_s / m.iterations)
        streamed = spec.replace(
            scenario="single-stream",
            iters=None,
            duration_s=duration_s,
            latency_bound_ms=loop_s[-1] * 1000,  # LoadGen sizes its query count with it
            sample_count=64,
            warmup=0,
        )
        q = SingleStream(streamed).run(RunContext(workload, progress=False))
        sut_s.append(q.window_s / q.iterations)
    workload.teardown()
    loop, sut = statistics.median(loop_s), statistics.median(sut_s)
    return {
        "spec": spec.to_dict(),
        "rounds": rounds,
        "duration_s": duration_s,
        "loop_s_per_step": loop,
        "single_stream_s_per_query": sut,
        "sut_us_per_query": (sut - loop) * 1e6,
        "sut_ratio": sut / loop,
        "rounds_s": {"loop": loop_s, "single_stream": sut_s},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.run.overhead", description=__doc__.split("\n")[0]
    )
    workloads = [
        w
        for w in registry.workload_names()
        if (w, "torch") in registry.REGISTRY and not registry.workload_info(w).harness_overhead
    ]
    p.add_argument("--workload", default="bert", choices=workloads)
    p.add_argument("--mode", default="infer", choices=["infer", "train"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument(
        "--telemetry-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help="also time the harness with telemetry sampling at this interval (0: no)",
    )
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument(
        "--sut",
        action="store_true",
        help="also time LoadGen single-stream queries against the loop at batch 1 (the "
        "batching SUT's cost per query), on this workload and on the null workload",
    )
    p.add_argument("--sut-seconds", type=float, default=3.0, help="per round and side")
    p.add_argument(
        "--fast",
        action="store_true",
        help="also check the fast suite's execution modes: the compiled (and, on a GPU, "
        "graph-captured) step, synchronized and pipelined, against hand-written loops",
    )
    args = p.parse_args(argv)

    device = resolve_device(args.device, default_gpus())
    spec = RunSpec(
        workload=args.workload,
        mode=args.mode,
        batch=args.batch,
        seq_len=args.seq_len,
        image_size=args.image_size,
        device=device,
        warmup=3,
    )
    result = interleaved_rounds(spec, args.rounds, args.iters, args.telemetry_interval or None)
    null = interleaved_rounds(
        RunSpec(workload="null", device=device, warmup=10), rounds=5, iters=100_000
    )
    result["null_us_per_iter"] = {k: v * 1e6 for k, v in null["s_per_iter"].items()}

    print(f"step: {run_label(spec)} (median of {args.rounds} interleaved rounds of {args.iters})")
    for name, seconds in result["s_per_iter"].items():
        print(f"  {name:10s} {seconds * 1e3:10.3f} ms/iter")
    print(
        f"  ratio harness/bare      {result['overhead_ratio']:.4f}"
        f"   (bare rounds spread {result['round_spread_bare'] * 100:.2f}%)"
    )
    if "telemetry_ratio" in result:
        print(
            f"  ratio telemetry/harness {result['telemetry_ratio']:.4f}"
            f"   (sampling every {args.telemetry_interval:g} s)"
        )
    nus = result["null_us_per_iter"]
    print(f"null step: harness {nus['harness']:.3f} us/iter, bare {nus['bare']:.3f} us/iter")
    if args.sut:
        result["sut"] = {}
        for sut_spec in (spec, RunSpec(workload="null", device=device, warmup=10)):
            sut = sut_rounds(sut_spec, rounds=3, duration_s=args.sut_seconds)
            result["sut"][sut_spec.workload] = sut
            print(
                f"SUT ({sut_spec.workload}, batch 1): loop {sut['loop_s_per_step'] * 1e3:.4f} "
                f"ms/step, single-stream {sut['single_stream_s_per_query'] * 1e3:.4f} ms/query: "
                f"+{sut['sut_us_per_query']:.1f} us per query, ratio {sut['sut_ratio']:.4f}"
            )
    if args.fast:
        result["fast"] = {}
        for fast in fast_specs(spec):
            rounds = interleaved_rounds(fast, args.rounds, args.iters)
            ratio = rounds["overhead_ratio"]
            agrees = abs(ratio - 1) < AGREEMENT
            rounds["agrees_within"] = AGREEMENT if agrees else None
            result["fast"][run_label(fast)] = rounds
            print(
                f"fast {fast.backend_label}: harness {rounds['s_per_iter']['harness'] * 1e3:.3f}"
                f" ms/iter, bare {rounds['s_per_iter']['bare'] * 1e3:.3f} ms/iter, ratio "
                f"{ratio:.4f} ({'within' if agrees else 'NOT within'} {AGREEMENT:.0%})"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def fast_specs(spec: RunSpec) -> list[RunSpec]:
    """The fast suite's execution modes of ``spec``: compiled (graph-captured on a GPU),
    timed synchronized and pipelined."""
    gpu = spec.device.startswith("cuda")
    fast = spec.replace(compile="default", cuda_graphs=gpu)
    return [fast.replace(timing="synchronized"), fast.replace(timing="pipelined")]


if __name__ == "__main__":
    sys.exit(main())
