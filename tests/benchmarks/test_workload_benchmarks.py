"""The workloads as pytest-benchmark benchmarks: each round is one step plus a device
synchronize (pedantic mode), at the `quick` suite's sizes for the device found.

`make test` runs them once each with timing disabled (as tests); `make bench-pytest` times
them, saves the run (--benchmark-autosave) and compares with the last saved one.
"""

import pytest

from bench.run import registry
from bench.run.registry import run_label
from bench.run.suites import suite_specs
from bench.telemetry.devices import default_gpus, resolve_device

DEVICE = resolve_device("auto", default_gpus())
GPU = DEVICE.startswith("cuda")
SPECS = [
    s
    for s in suite_specs("quick", gpu=GPU, backends=("torch",), device=DEVICE)
    if s.workload != "null"
]
ROUNDS, WARMUP = (30, 5) if GPU else (3, 1)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[run_label(s) for s in SPECS])
def test_workload_step(benchmark, spec):
    workload = registry.load(registry.lookup(spec.workload, spec.backend).target)(spec)
    workload.setup()

    def step() -> None:
        workload.step()
        workload.sync()

    benchmark.group = f"{spec.workload}-{spec.mode}"
    benchmark.extra_info.update(spec=spec.to_dict(), samples_per_step=workload.samples_per_step)
    try:
        benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)
    finally:
        workload.teardown()
