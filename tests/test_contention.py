"""Contaminated measurements are flagged or refused: other processes busy on a CPU run's
cores (decided from process facts given as data), more CPU ranks than cores, and a
``bench`` that a shell started with SIGINT ignored still stops on SIGINT."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.run import runner
from bench.run.store import new_record
from bench.run.validity import validity_flags
from bench.schema.record import Environment
from bench.schema.spec import RunSpec, SpecError
from bench.schema.telemetry import BusyProcess, TelemetrySummary
from bench.telemetry import session
from bench.telemetry.contention import CpuWatch, Own, ProcessUse, busy_others
from bench.telemetry.session import Telemetry

ROOT = Path(__file__).resolve().parent.parent
SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
OWN = Own(session=100, pids=frozenset({100, 50, 1}), cores=frozenset({0, 1}))


def use(pid: int, cpu: float, cores=None, session=None, name="proc") -> ProcessUse:
    return ProcessUse(
        pid=pid,
        name=name,
        cpu_pct=cpu,
        cores=frozenset(cores) if cores is not None else None,
        session=session if session is not None else pid,
    )


def test_busy_others_keeps_only_other_busy_processes_on_the_run_cores():
    uses = [
        use(100, 190.0, session=100),  # the worker itself
        use(101, 95.0, session=100),  # a loader worker or CPU rank: same session
        use(50, 30.0, session=7),  # the bench that started the worker (an ancestor)
        use(200, 9.9),  # below the threshold
        use(201, 10.0, name="stress"),  # at the threshold
        use(202, 180.0, cores={2, 3}),  # pinned to other cores
        use(203, 75.5, cores={1, 2}, name="python3"),  # shares core 1
        use(204, 12.34, cores=None, session=None),  # affinity and session unknown
    ]
    assert busy_others(uses, OWN) == [
        BusyProcess(pid=203, name="python3", cpu_pct=75.5),
        BusyProcess(pid=204, name="proc", cpu_pct=12.3),
        BusyProcess(pid=201, name="stress", cpu_pct=10.0),
    ]
    assert busy_others(uses, OWN, threshold_pct=80.0) == []


def test_the_flag_names_the_busy_processes():
    r = new_record(RunSpec(workload="null", device="cpu"), Environment())
    r.telemetry = TelemetrySummary(
        other_cpu_processes=[
            BusyProcess(pid=203, name="python3", cpu_pct=75.5),
            BusyProcess(pid=201, name="stress", cpu_pct=10.0),
        ]
    )
    flags = validity_flags(r)
    assert [f.code for f in flags] == ["other_processes"]
    assert flags[0].message == (
        "other processes were busy on the run's CPU cores during the measured window "
        "(pid, name, % of a core: 203 python3 75.5%, 201 stress 10%)"
    )
    r.telemetry = TelemetrySummary(other_cpu_processes=[])
    assert validity_flags(r) == []


class FakeWatch(CpuWatch):
    def __init__(self, uses: list[ProcessUse]) -> None:
        super().__init__()
        self.uses = uses
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> list[ProcessUse]:
        assert self.started
        return self.uses


def test_telemetry_reads_the_processes_at_the_window_edges(monkeypatch):
    monkeypatch.setattr(session, "own_facts", lambda: OWN)
    watch = FakeWatch([use(300, 150.0, name="other-run"), use(101, 99.0, session=100)])
    tele = Telemetry(None, absent_reason="CPU run: no GPU to sample", cpu_watch=watch)
    tele.mark("warmup_start", 1.0)
    assert not watch.started
    tele.mark("measure_start", 2.0)
    assert watch.started and tele.cpu_uses is None
    tele.mark("measure_end", 3.0)
    summary = tele.summary(10)
    assert summary.other_cpu_processes == [BusyProcess(pid=300, name="other-run", cpu_pct=150.0)]


def test_a_cpu_run_watches_the_cpu_and_a_gpu_run_does_not():
    assert isinstance(Telemetry.open("cpu", {}, [], 0.1).cpu_watch, CpuWatch)
    assert Telemetry.open("cuda:0", {}, [], 0.1).cpu_watch is None
    summary = Telemetry(None, absent_reason="x").summary(0)
    assert summary.other_cpu_processes is None


def test_cpu_watch_sees_a_busy_process_of_another_session():
    """The glue to psutil, with a process this test controls: a spinner in its own session."""
    spinner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.time() + 30\nwhile time.time() < end: pass",
        ],
        start_new_session=True,
    )
    try:
        time.sleep(0.3)
        watch = CpuWatch()
        watch.start()
        time.sleep(1.0)
        uses = {u.pid: u for u in watch.stop()}
    finally:
        spinner.kill()
        spinner.wait()
    assert uses[spinner.pid].session == spinner.pid
    assert uses[spinner.pid].cpu_pct > 0
    assert uses[os.getpid()].session == os.getsid(0)


# -- more CPU ranks than cores ---------------------------------------------------------------
def test_more_cpu_ranks_than_cores_are_refused():
    spec = RunSpec(workload="ssd", mode="train", device="cpu", gpus=3)
    with pytest.raises(SpecError) as info:
        runner.prepare(spec, gpus=[], cores=2)
    assert str(info.value) == (
        "--gpus 3 on the CPU asks for 3 ranks, but this machine has 2 usable core(s): "
        "give --gpus 2 or fewer"
    )
    assert runner.prepare(spec, gpus=[], cores=3).gpus == 3


def test_the_command_line_refuses_them_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "usable_cores", lambda: frozenset({0, 1}))
    out = tmp_path / "runs"
    argv = ["run", "--workload", "ssd", "--mode", "train", "--device", "cpu", "--gpus", "3"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "bench: error: --gpus 3 on the CPU asks for 3 ranks, but this machine has 2 usable "
        "core(s): give --gpus 2 or fewer"
    )
    assert not out.exists()
