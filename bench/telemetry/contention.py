"""Other processes busy on a CPU run's cores during its measured window.

Two runs at once on a small machine each run many times slower, and steadily so (a low
coefficient of variation): nothing in the run's own figures shows it. A CPU run therefore
reads every process's CPU time at both edges of its window (psutil) and keeps those of
others that were busy on its cores: they become the ``other_processes`` validity flag, as
other processes on the GPU do for a GPU run.

The run's own processes are not others: its session (the runner starts each worker as a
session leader, so its loader workers and CPU ranks share it) and its ancestors (the
``bench`` that started it). :func:`busy_others` decides from facts given as data;
:class:`CpuWatch` reads them from this machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.schema.telemetry import BusyProcess

#: A process using at least this share of one core over the window (percent) counts as busy.
BUSY_CPU_PCT = 10.0


@dataclass(frozen=True)
class ProcessUse:
    """One process's CPU use over the window, and what places it."""

    pid: int
    name: str
    #: Percent of one core over the window (above 100 for several busy threads).
    cpu_pct: float
    #: The cores it may run on; None where unknown (then: any of them).
    cores: frozenset[int] | None
    #: Its session id; None where unknown.
    session: int | None


@dataclass(frozen=True)
class Own:
    """What makes a process part of the run itself."""

    session: int
    pids: frozenset[int]
    cores: frozenset[int]


def busy_others(
    uses: Iterable[ProcessUse], own: Own, threshold_pct: float = BUSY_CPU_PCT
) -> list[BusyProcess]:
    """Processes outside the run that used at least ``threshold_pct`` of a core over the
    window and may run on the run's cores; the busiest first."""
    busy = [
        BusyProcess(pid=u.pid, name=u.name, cpu_pct=round(u.cpu_pct, 1))
        for u in uses
        if u.pid not in own.pids
        and u.session != own.session
        and (u.cores is None or u.cores & own.cores)
        and u.cpu_pct >= threshold_pct
    ]
    return sorted(busy, key=lambda b: (-b.cpu_pct, b.pid))


def own_facts() -> Own:
    """This process's session, itself and its ancestors, and its usable cores."""
    import psutil

    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in _safe(me.parents, [])}
    return Own(session=os.getsid(0), pids=frozenset(pids), cores=usable_cores())


def usable_cores() -> frozenset[int]:
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def _safe(fn: Any, default: Any, *args: Any) -> Any:
    import psutil

    try:
        return fn(*args)
    except (psutil.Error, OSError):
        return default


class CpuWatch:
    """CPU time of every process at ``start()`` and ``stop()``: ``stop()`` returns each
    one's use over the interval. A process that started or ended in between is not seen."""

    def __init__(self) -> None:
        self._processes: dict[int, Any] = {}

    def start(self) -> None:
        import psutil

        self._processes = {}
        for process in psutil.process_iter():
            if _safe(process.cpu_percent, None, None) is not None:  # the reference point
                self._processes[process.pid] = process

    def stop(self) -> list[ProcessUse]:
        uses = []
        for pid, process in self._processes.items():
            pct = _safe(process.cpu_percent, None, None)
            if pct is None:
                continue  # gone
            cores = _safe(process.cpu_affinity, None)
            session = None
            with contextlib.suppress(OSError):
                session = os.getsid(pid)
            uses.append(
                ProcessUse(
                    pid=pid,
                    name=_safe(process.name, "?"),
                    cpu_pct=float(pct),
                    cores=frozenset(cores) if cores else None,
                    session=session,
                )
            )
        self._processes = {}
        return uses
