"""Real Triton servers (through PyTriton) for the served path's tests; run in .venv-serve."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest

from bench.schema.spec import RunSpec, SpecError
from bench.serve import launcher
from bench.serve.server import ServeConfig

#: The sleeper's fixed time per batch: latencies are bounded below by it.
SERVICE_MS = 20.0
MAX_BATCH = 8


def free_ports() -> int:
    """A first port whose next two are free too (HTTP, gRPC, metrics)."""
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(20000, 60000)
        try:
            launcher.check_ports_free(launcher.LOOPBACK, launcher.ports(port))
        except SpecError:
            continue
        return port
    raise RuntimeError("no three free ports in a row")


def group_gone(pgid: int, wait_s: float = 30.0) -> bool:
    """Whether no process of the group is left, allowing members killed a moment ago the
    time to be reaped (until then they still count)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def sleeper_config(**overrides: object) -> ServeConfig:
    spec = RunSpec(workload="null", device="cpu", batch=MAX_BATCH)
    settings: dict[str, object] = {
        "port": free_ports(),
        "max_batch": MAX_BATCH,
        "queue_delay_ms": 5.0,
        "service_ms": SERVICE_MS,
    }
    settings.update(overrides)
    return launcher.make_config(spec, **settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sleeper() -> Iterator[launcher.Server]:
    """The null workload served with a fixed service time per batch."""
    with launcher.running(sleeper_config(), timeout_s=180) as server:
        yield server
    assert group_gone(server.proc.pid), "a process of the server's group outlived it"
