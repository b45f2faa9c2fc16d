"""The project's Python environments and the process groups the harness starts: what both
the runner and the served path (which the runner calls) need, below both of them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.run import envinfo, registry
from bench.schema.errors import SpecError

#: After SIGTERM, how long a worker's process group gets before SIGKILL.
STOP_GRACE_S = 5.0


def python_for(env: str) -> Path:
    """The interpreter of environment ``env``; ``main`` is the one running this code."""
    if env == "main":
        return Path(sys.executable)
    directory = registry.ENVIRONMENTS.get(env)
    if directory is None:
        raise SpecError(f"unknown environment {env!r}")
    python = envinfo.PROJECT_ROOT / directory / "bin" / "python"
    if not python.exists():
        raise SpecError(f"the {env} environment is not set up ({directory}): run `make setup`")
    return python


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL what is left after
    ``grace_s``; returns once ``proc`` has exited."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no member of its group outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
