"""How much does the harness cost? The timed loop of :mod:`bench.loop` against a bare
hand-written loop over the same step, in one process, rounds interleaved.

    python -m bench.overhead [--workload bert --batch 1 --seq-len 64 --rounds 7 --iters 20]

The bare loop is what a person would write: ``for _ in range(n): step(); sync()`` between
two clock reads. The harness adds a clock read, a list append and a progress-bar update
per iteration. The ratio of the two medians is the overhead; the null workload's
per-iteration time is the harness cost in absolute terms.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import registry
from bench.devices import default_gpus, resolve_device
from bench.loop import measure
from bench.spec import RunSpec


def bare_loop(step: Any, sync: Any, iters: int) -> float:
    """Seconds per iteration of the plainest correct loop."""
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
        sync()
    return (time.perf_counter() - start) / iters


def harness_loop(step: Any, sync: Any, iters: int) -> float:
    m = measure(
        step, sync, warmup=0, iters=iters, duration_s=None, progress=True, stream=io.StringIO()
    )
    return m.window_s / m.iterations


def compare(spec: RunSpec, rounds: int, iters: int) -> dict[str, Any]:
    """Median seconds per iteration of both loops over ``rounds`` interleaved rounds."""
    entry = registry.lookup(spec.workload, spec.backend, spec.mode)
    workload = registry.load(entry.target)(spec)
    workload.setup()
    for _ in range(spec.warmup):
        workload.step()
    workload.sync()
    bare, harness = [], []
    for i in range(rounds):
        # alternate which goes first so that drifts (clocks, caches) hit both alike
        order = (bare_loop, harness_loop) if i % 2 == 0 else (harness_loop, bare_loop)
        for fn in order:
            (bare if fn is bare_loop else harness).append(fn(workload.step, workload.sync, iters))
    workload.teardown()
    b, h = statistics.median(bare), statistics.median(harness)
    return {
        "spec": spec.to_dict(),
        "rounds": rounds,
        "iters_per_round": iters,
        "bare_s_per_iter": b,
        "harness_s_per_iter": h,
        "bare_rounds_s": bare,
        "harness_rounds_s": harness,
        "overhead_ratio": h / b,
        "round_spread_bare": (max(bare) - min(bare)) / b,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n")[0])
    p.add_argument("--workload", default="bert", choices=["bert", "ssd"])
    p.add_argument("--mode", default="infer", choices=["infer", "train"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
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
    result = compare(spec, args.rounds, args.iters)
    null = compare(RunSpec(workload="null", device=device, warmup=10), rounds=5, iters=100_000)
    result["null_harness_us_per_iter"] = null["harness_s_per_iter"] * 1e6
    result["null_bare_us_per_iter"] = null["bare_s_per_iter"] * 1e6

    print(f"step: {spec.label}")
    print(
        f"  bare loop     {result['bare_s_per_iter'] * 1e3:10.3f} ms/iter (median of {args.rounds})"
    )
    print(f"  harness loop  {result['harness_s_per_iter'] * 1e3:10.3f} ms/iter")
    print(
        f"  ratio harness/bare  {result['overhead_ratio']:.4f}"
        f"   (bare rounds spread {result['round_spread_bare'] * 100:.2f}%)"
    )
    print(
        f"null step: harness {result['null_harness_us_per_iter']:.3f} us/iter, "
        f"bare {result['null_bare_us_per_iter']:.3f} us/iter"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
